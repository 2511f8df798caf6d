"""What a decision works with: the observed children (Observed), the decision being built (Plan)
and what it ends in (Decision, Event). Pure: no client, no kopf."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..api.release import LegalModelRelease
from ..api.status import SECTIONS, WARNING_PHASES, LegalModelReleaseStatus, Phase
from ..contracts.progress import Progress
from ..render import serving as render_serving
from . import conditions as cond
from .conditions import EVALUATED, TRAINED
from .storage import StoragePeer


@dataclass(frozen=True)
class Peer:
    """Another release of the same serving target (or this one), as far as serving is concerned."""

    name: str
    version: str
    phase: str | None
    passed: bool
    created: str = ""
    uid: str = ""
    deleting: bool = False  # has a deletionTimestamp: never serves again

    @classmethod
    def of(cls, release: LegalModelRelease) -> Peer:
        status = release.status.to_wire() if release.status else {}
        conds = status.get("conditions") or []
        passed = cond.is_true(conds, TRAINED) and cond.is_true(conds, EVALUATED)
        return cls(
            release.name,
            release.spec.version,
            status.get("phase"),
            passed,
            release.metadata.creation_timestamp or "",
            release.metadata.uid or "",
            release.metadata.deletion_timestamp is not None,
        )

    def order(self) -> tuple[tuple[int, ...], str, str]:
        """Which of a target's releases is newest: version, then creation time, then name. Every
        release computes the same order, so two of one version never both step aside."""
        return version_key(self.version), self.created, self.name


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.lstrip("v").split("."))


@dataclass(frozen=True)
class ServingView:
    deployment: dict[str, Any] | None
    peers: tuple[Peer, ...]
    previous: LegalModelRelease | None = None  # the release the Deployment names as previous
    key_version: str | None = None  # resourceVersion of the target's key Secret; None: absent


@dataclass(frozen=True)
class Observed:
    training_job: dict[str, Any] | None = None
    training_pods: tuple[dict[str, Any], ...] = ()
    evaluation_job: dict[str, Any] | None = None
    evaluation_pods: tuple[dict[str, Any], ...] = ()
    serving: ServingView | None = None  # None: not looked at yet
    storage_peers: tuple[StoragePeer, ...] | None = None  # None: not looked at yet
    storage_job: dict[str, Any] | None = None  # the prune Job (or, while deleting, the reclaim Job)
    storage_pods: tuple[dict[str, Any], ...] = ()
    # Pods of a stage Job that has not finished and has no ready pod: why it may not be starting.
    waiting_pods: tuple[dict[str, Any], ...] = ()
    # What the running stage's pod reports of its progress (None: not running, or not readable now).
    progress: Progress | None = None
    # Children found under this release's names that it does not own (an earlier release of the same
    # name, or one being deleted): "Kind/name" each. Nothing is created until they are gone.
    stale_children: tuple[str, ...] = ()


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Decision:
    status: dict[str, Any]
    previous: dict[str, Any] = field(default_factory=dict)  # the status decided from
    create: list[dict[str, Any]] = field(default_factory=list)  # create if absent (Jobs are immutable)
    apply: list[dict[str, Any]] = field(default_factory=list)  # server-side apply
    events: list[Event] = field(default_factory=list)
    needs_serving: bool = False  # observe the serving target, then decide again
    needs_storage_peers: bool = False  # observe the namespace's releases' placements, then decide again
    finalizers: list[str] | None = None  # the release's finalizers to set (None: leave them)
    delete: list[dict[str, Any]] = field(default_factory=list)  # children to delete (their pods first)
    # A key Secret to generate (random, in the shell: never through decide() or status), then decide again.
    generate_key: render_serving.KeyRef | None = None


class Plan:
    """The decision being built: a copy of status plus what to do."""

    def __init__(self, release: LegalModelRelease, now: str):
        self.release = release
        self.now = now
        self.old = release.status.to_wire() if release.status else {}
        self.status = dict(self.old.items())
        self.status["observedGeneration"] = release.metadata.generation
        self.status.setdefault("conditions", [])
        self.decision = Decision(self.status, previous=self.old)

    def condition(self, type_: str, status: str, reason: str, message: str = "") -> None:
        self.status["conditions"] = cond.set_condition(
            self.status["conditions"],
            type_,
            status,
            reason,
            message,
            generation=self.release.metadata.generation,
            now=self.now,
        )

    def planned_release(self) -> LegalModelRelease:
        """The release with the status this decision writes: what serving renders from (the weights'
        checksum a training result brought in this very reconcile, not the status read before it,
        or the target's first rollout would be followed at once by a second one)."""
        return self.release.model_copy(update={"status": LegalModelReleaseStatus.model_validate(self.status)})

    def section(self, key: str, **values: Any) -> None:
        """Merge `values` (camelCase, as on the wire) into a status section, through its model."""
        merged = {**(self.status.get(key) or {}), **{k: v for k, v in values.items() if v is not None}}
        self.status[key] = SECTIONS[key].written(merged)

    def phase(self, phase: Phase, reason: str, message: str) -> Decision:
        self.status["phase"] = phase.value
        if self.old.get("phase") != phase:
            kind = "Warning" if phase in WARNING_PHASES else "Normal"
            self.decision.events.append(Event(kind, reason, message))
        return self.decision
