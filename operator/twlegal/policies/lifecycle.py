"""The lifecycle of a release, decided from what is observed (pure: no client, no kopf).

    Pending -> Training -> Evaluating -> RollingOut -> Serving -> Superseded
       Failed (training/evaluation error), Rejected (score or loss), RolledBack (pods never ready)

`decide()` is level-based: given the release and its children as they are now, it returns the
whole desired status, the objects to create or apply, and the events of the transition. Calling it
again with the same inputs gives the same answer, so a restart or a missed event changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..api import reasons as R
from ..api.release import LegalModelRelease
from ..api.status import SECTIONS, TERMINAL_PHASES, WARNING_PHASES, Phase
from ..contracts.evaluation import EvaluationResult
from ..contracts.training import TrainingResult
from ..render import evaluation as render_evaluation
from ..render import names, pod
from ..render import serving as render_serving
from ..render import training as render_training
from ..render.settings import OperatorSettings
from . import children, consistency
from . import conditions as cond
from .conditions import DEPLOYED, EVALUATED, INPUTS_PINNED, READY, TRAINED

PREVIOUS_RELEASE_ANNOTATION = f"{names.ANNOTATION_PREFIX}/previous-release"


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.lstrip("v").split("."))


@dataclass(frozen=True)
class Peer:
    """Another release of the same serving target (or this one), as far as serving is concerned."""

    name: str
    version: str
    phase: str | None
    passed: bool
    created: str = ""

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
            str((release.metadata.model_extra or {}).get("creationTimestamp", "")),
        )


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
    # A key Secret to generate (random, in the shell: never through decide() or status), then decide again.
    generate_key: render_serving.KeyRef | None = None


class _Plan:
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


def settled_stages(release: LegalModelRelease) -> tuple[bool, bool]:
    """(training settled, evaluation settled): stages whose outcome status already records, so
    their Jobs and pods need not be read again (decide() continues from status)."""
    status = release.status.to_wire() if release.status else {}
    conds = status.get("conditions") or []
    trained = cond.is_true(conds, TRAINED)
    evaluated = release.spec.evaluation is None or (
        cond.get(conds, EVALUATED) is not None and "score" in (status.get("evaluation") or {})
    )
    return trained, trained and evaluated


def decide(release: LegalModelRelease, observed: Observed, settings: OperatorSettings, now: str) -> Decision:
    plan = _Plan(release, now)
    _inputs(plan)
    if plan.old.get("phase") in TERMINAL_PHASES:
        return plan.decision  # a failed, rejected or rolled-back release stays so; nothing more to do
    done = _training(plan, observed, settings)
    if done is not None:
        return done
    done = _evaluation(plan, observed, settings)
    if done is not None:
        return done
    if not release.spec.serving.enabled:
        plan.condition(DEPLOYED, "False", R.SERVING_DISABLED, "spec.serving.enabled is false")
        plan.condition(READY, "True", R.TRAINED_ONLY, "trained and evaluated; serving is disabled")
        return plan.phase(Phase.COMPLETED, R.COMPLETED, "release trained and passed; serving is disabled")
    if observed.serving is None:
        plan.decision.needs_serving = True
        return plan.decision
    return _serving(plan, observed.serving, settings)


# --- inputs -----------------------------------------------------------------------------------


def _inputs(plan: _Plan) -> None:
    """InputsPinned: whether every input names exactly what it trains on. Unpinned data is allowed
    (many hub datasets have no tags) but said loudly, once as an event and for good in status."""
    findings = consistency.unpinned_datasets(plan.release.spec)
    was_false = cond.is_false(plan.old.get("conditions") or [], INPUTS_PINNED)
    if findings:
        plan.condition(INPUTS_PINNED, "False", findings[0].reason, findings[0].message)
        if not was_false:
            plan.decision.events.append(Event("Warning", findings[0].reason, findings[0].message))
    else:
        plan.condition(INPUTS_PINNED, "True", R.PINNED, "the base model and every hub dataset name a revision")


# --- training ---------------------------------------------------------------------------------


def _training(plan: _Plan, observed: Observed, settings: OperatorSettings) -> Decision | None:
    release = plan.release
    job_name = names.training_job_name(release)
    job = observed.training_job
    if job is None:
        if cond.is_true(plan.status["conditions"], TRAINED):
            return None  # trained earlier; the Job was cleaned up since
        plan.decision.create += render_training.render(release, settings)
        plan.section("training", job=job_name)
        plan.condition(TRAINED, "Unknown", R.JOB_CREATED, f"training Job {job_name} created")
        plan.condition(READY, "False", R.TRAINING, "the release is not trained yet")
        return plan.phase(Phase.PENDING, R.TRAINING_JOB_CREATED, f"created training Job {job_name}")

    state = children.job_state(job)
    raw = children.termination_message(list(observed.training_pods), render_training.CONTAINER)
    result = children.parse_result(raw, TrainingResult)
    plan.section(
        "training",
        job=job_name,
        startTime=state.start_time,
        completionTime=state.completion_time,
        attempts=state.attempts,
    )
    if result is not None:
        _record_training_result(plan, result)

    if state.state == "pending" and plan.old.get("phase") != Phase.TRAINING:
        plan.condition(TRAINED, "Unknown", R.SCHEDULING, "waiting for the training pod to start")
        plan.condition(READY, "False", R.TRAINING, "the release is not trained yet")
        return plan.phase(Phase.PENDING, R.TRAINING_PENDING, f"training Job {job_name} is waiting for its pod")
    # A Job between attempts (the last pod gone, its replacement not running yet) reads as pending:
    # once training has started that is still training, never a success.
    if state.state in ("running", "pending"):
        plan.condition(TRAINED, "Unknown", R.TRAINING, f"training (attempt {max(state.attempts, 1)})")
        plan.condition(READY, "False", R.TRAINING, "the release is not trained yet")
        return plan.phase(Phase.TRAINING, R.TRAINING_STARTED, f"training Job {job_name} is running")
    if state.state == "failed":
        if result is not None and result.outcome == "Diverged":
            plan.condition(TRAINED, "False", R.LOSS_DIVERGED, result.message or "the training loss diverged")
            plan.condition(READY, "False", R.REJECTED, f"training loss diverged: {result.message}".strip())
            return plan.phase(Phase.REJECTED, R.LOSS_DIVERGED, f"training loss diverged: {result.message}".strip())
        # The trainer's own words (its result, or the log tail the kubelet kept) say most.
        detail = result.message if result else (raw or "").strip()[-2000:]
        message = "; ".join(part for part in (state.message, detail) if part) or state.reason
        plan.condition(TRAINED, "False", state.reason or R.JOB_FAILED, message)
        plan.condition(READY, "False", R.FAILED, f"training failed (checkpoints are kept): {message}")
        return plan.phase(
            Phase.FAILED, f"Training{state.reason or 'Failed'}", f"training Job {job_name} failed: {message}"
        )

    # succeeded
    plan.condition(TRAINED, "True", R.TRAINED_OK, _trained_message(result))
    guard = release.spec.evaluation.loss_guard if release.spec.evaluation else None
    if (
        guard
        and guard.max_final_loss is not None
        and result
        and result.final_loss is not None
        and result.final_loss > guard.max_final_loss
    ):
        message = f"final training loss {result.final_loss:g} is above maxFinalLoss {guard.max_final_loss:g}"
        plan.condition(EVALUATED, "False", R.FINAL_LOSS_TOO_HIGH, message)
        plan.condition(READY, "False", R.REJECTED, message)
        return plan.phase(Phase.REJECTED, R.FINAL_LOSS_TOO_HIGH, message)
    return None


def _record_training_result(plan: _Plan, result: TrainingResult) -> None:
    for key, values in result.status_sections().items():
        plan.section(key, **values)


def _trained_message(result: TrainingResult | None) -> str:
    if result is None:
        return "training Job succeeded (no result reported)"
    parts = [
        f"{result.global_step} steps" if result.global_step is not None else "",
        f"final loss {result.final_loss:g}" if result.final_loss is not None else "",
    ]
    return "trained: " + ", ".join(p for p in parts if p) if any(parts) else "trained"


# --- evaluation -------------------------------------------------------------------------------


def _evaluation(plan: _Plan, observed: Observed, settings: OperatorSettings) -> Decision | None:
    release = plan.release
    spec = release.spec.evaluation
    if spec is None:
        plan.condition(EVALUATED, "True", R.NOT_CONFIGURED, "no evaluation configured")
        return None
    job_name = names.evaluation_job_name(release)
    bench = spec.benchmark.name or spec.benchmark.path
    plan.section("evaluation", job=job_name, benchmark=bench, minScore=spec.min_score)
    job = observed.evaluation_job
    if job is None:
        if cond.get(plan.status["conditions"], EVALUATED) and "score" in (plan.status.get("evaluation") or {}):
            return _gate(plan, plan.status["evaluation"]["score"])  # evaluated earlier; Job cleaned up
        plan.decision.create += render_evaluation.render(release, settings)
        plan.condition(EVALUATED, "Unknown", R.JOB_CREATED, f"evaluation Job {job_name} created")
        plan.condition(READY, "False", R.EVALUATING, f"scoring on {bench}")
        return plan.phase(Phase.EVALUATING, R.EVALUATION_STARTED, f"scoring on {bench}")
    state = children.job_state(job)
    if state.state in ("pending", "running"):
        plan.condition(EVALUATED, "Unknown", R.EVALUATING, f"scoring on {bench}")
        plan.condition(READY, "False", R.EVALUATING, f"scoring on {bench}")
        return plan.phase(Phase.EVALUATING, R.EVALUATION_STARTED, f"scoring on {bench}")
    message = children.termination_message(list(observed.evaluation_pods), render_evaluation.CONTAINER)
    result = children.parse_result(message, EvaluationResult)
    if state.state == "failed" or result is None:
        why = state.message or message or "the evaluation reported no score"
        plan.condition(EVALUATED, "False", R.EVALUATION_FAILED, why)
        plan.condition(READY, "False", R.FAILED, f"evaluation failed: {why}")
        return plan.phase(Phase.FAILED, R.EVALUATION_FAILED, f"evaluation Job {job_name} failed: {why}")
    return _gate(plan, result.score)


def _gate(plan: _Plan, score: float) -> Decision | None:
    spec = plan.release.spec.evaluation
    assert spec is not None
    passed = score >= spec.min_score
    plan.section("evaluation", score=score, passed=passed)
    if not passed:
        message = f"score {score:g} is below minScore {spec.min_score:g}"
        plan.condition(EVALUATED, "False", R.SCORE_BELOW_THRESHOLD, message)
        plan.condition(READY, "False", R.REJECTED, f"{message}: never served")
        return plan.phase(Phase.REJECTED, R.SCORE_BELOW_THRESHOLD, message)
    plan.condition(EVALUATED, "True", R.PASSED, f"score {score:g} >= minScore {spec.min_score:g}")
    return None


# --- serving ----------------------------------------------------------------------------------


def _serving(plan: _Plan, view: ServingView, settings: OperatorSettings) -> Decision:
    release = plan.release
    target = names.serving_target(release)
    me = Peer(release.name, release.spec.version, plan.status.get("phase"), True)
    pinned = children.template_label(view.deployment, names.RELEASE_LABEL)
    # Only a passed release pins the target, so the pinned one counts as passed even when the
    # view of its status lags behind; a release deleted since no longer counts.
    candidates = [
        p
        for p in view.peers
        if p.name != release.name and p.phase not in TERMINAL_PHASES and (p.passed or p.name == pinned)
    ]
    newest = max([me, *candidates], key=lambda p: (version_key(p.version), p.created, p.name))
    key = render_serving.api_key_ref(release, settings)
    plan.section(
        "serving",
        target=target,
        deployment=target,
        service=target,
        endpoint=render_serving.endpoint(release),
        apiKeySecret=str(key) if key else None,
    )
    if newest.name == release.name and key is not None and key.generated and view.key_version is None:
        # Serving is closed by default: no key named anywhere, so the target gets one of its own.
        plan.decision.generate_key = key
        return plan.decision

    if newest.name != release.name:
        if plan.old.get("phase") == Phase.SERVING and newest.phase != Phase.SERVING:
            return plan.decision  # its pods serve until the newer release's are ready
        serving = plan.status.get("serving") or {}
        plan.section(
            "serving",
            supersededBy=newest.name,
            servedUntil=serving.get("servedUntil") or (plan.now if serving.get("servingSince") else None),
        )
        plan.condition(DEPLOYED, "False", R.SUPERSEDED, f"{newest.name} ({newest.version}) serves {target}")
        plan.condition(READY, "False", R.SUPERSEDED, f"{newest.name} ({newest.version}) serves {target}")
        return plan.phase(Phase.SUPERSEDED, R.SUPERSEDED, f"{newest.name} ({newest.version}) now serves {target}")

    previous_name = previous_release_name(release.name, view.deployment)
    previous = view.previous if view.previous and view.previous.name == previous_name else None

    if pinned == release.name:
        rollout = children.rollout_state(view.deployment or {})
        if rollout.state == "failed" and plan.old.get("phase") == Phase.ROLLING_OUT:
            return _roll_back(plan, previous, rollout.message, settings, view.key_version)
        # Otherwise the deadline belongs to a rollout this release did not start (e.g. the one
        # rolled back to it): its own template is being restored, so wait for that.
        plan.section("serving", readyReplicas=rollout.ready_replicas)
        if rollout.state != "complete":
            plan.decision.apply += _serving_objects(release, previous, settings, view.key_version)
            plan.condition(DEPLOYED, "Unknown", R.ROLLING_OUT, rollout.message)
            plan.condition(READY, "False", R.ROLLING_OUT, rollout.message)
            return plan.phase(Phase.ROLLING_OUT, R.ROLLOUT_STARTED, f"rolling {target} to {release.spec.version}")
        plan.decision.apply += _serving_objects(release, previous, settings, view.key_version)
        plan.section(
            "serving",
            revision=release.spec.version,
            servingSince=(plan.status.get("serving") or {}).get("servingSince") or plan.now,
        )
        plan.status["serving"].pop("supersededBy", None)  # serving again, e.g. after a newer one rolled back
        plan.status["serving"].pop("servedUntil", None)
        plan.condition(DEPLOYED, "True", R.ROLLOUT_COMPLETE, f"{target} serves {release.spec.version}")
        plan.condition(READY, "True", R.SERVING, f"{target} serves {release.spec.version}")
        return plan.phase(Phase.SERVING, R.SERVING, f"{target} serves {release.spec.version}")

    # Pin the target to this release; remember who served before, for rollback.
    plan.decision.apply += _serving_objects(release, previous, settings, view.key_version)
    if previous is not None:
        plan.section("serving", previousRevision=previous.spec.version)
    plan.condition(DEPLOYED, "Unknown", R.ROLLING_OUT, f"rolling {target} to {release.spec.version}")
    plan.condition(READY, "False", R.ROLLING_OUT, "new serving pods are not ready yet")
    return plan.phase(Phase.ROLLING_OUT, R.ROLLOUT_STARTED, f"rolling {target} to {release.spec.version}")


def previous_release_name(release_name: str, deployment: dict[str, Any] | None) -> str | None:
    """Who served the target before `release_name` took it: the release pinned now, or, once
    this release is pinned, the one the Deployment remembers."""
    pinned = children.template_label(deployment, names.RELEASE_LABEL)
    if pinned and pinned != release_name:
        return pinned
    return children.annotation(deployment, PREVIOUS_RELEASE_ANNOTATION) or None


def _serving_objects(
    release: LegalModelRelease,
    previous: LegalModelRelease | None,
    settings: OperatorSettings,
    key_version: str | None,
) -> list[dict[str, Any]]:
    """Deployment, Service and NetworkPolicy pinned to `release`. Both releases own them, so deleting
    the newer release alone never takes the target down (garbage collection waits for every owner)."""
    objects = render_serving.render(release, settings, key_version)
    for obj in objects:
        meta = obj["metadata"]
        if previous is not None and previous.metadata.uid:
            meta["ownerReferences"] = [
                *meta.get("ownerReferences", []),
                pod.owner_reference(previous, controller=False),
            ]
        if obj["kind"] == "Deployment":
            meta.setdefault("annotations", {})[PREVIOUS_RELEASE_ANNOTATION] = previous.name if previous else ""
    return objects


def _roll_back(
    plan: _Plan, previous: LegalModelRelease | None, why: str, settings: OperatorSettings, key_version: str | None
) -> Decision:
    release = plan.release
    target = names.serving_target(release)
    if previous is not None:
        # The previous release pins the target again, remembering nobody before it.
        # The key version holds only if the previous release reads the same Secret.
        same_key = render_serving.api_key_ref(previous, settings) == render_serving.api_key_ref(release, settings)
        plan.decision.apply += _serving_objects(previous, None, settings, key_version if same_key else None)
        restored = f"; {target} serves {previous.spec.version} again"
    else:
        restored = "; there is no previous revision to restore"
    message = f"new pods never became ready ({why}){restored}"
    plan.section("serving", readyReplicas=0)
    plan.condition(DEPLOYED, "False", R.PROGRESS_DEADLINE_EXCEEDED, message)
    plan.condition(READY, "False", R.ROLLED_BACK, message)
    return plan.phase(Phase.ROLLED_BACK, R.ROLLED_BACK, message)
