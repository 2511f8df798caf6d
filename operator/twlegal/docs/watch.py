"""What `twlegal watch` shows of a release at one moment, and when it is done (pure).

A Snapshot is read off the release's status alone, so a terminal, a log line and a JSON line all
say the same thing, and a test can hold them to the same facts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..api.status import TERMINAL_PHASES, Phase
from ..policies import conditions as cond

# Phases `twlegal watch` ends on: 0 for those a pipeline may go on after, 1 for the others.
SUCCEEDED = frozenset({Phase.SERVING, Phase.COMPLETED, Phase.SUPERSEDED})
FAILED = TERMINAL_PHASES


@dataclass(frozen=True)
class Snapshot:
    phase: str  # "Queued" until the operator has written a phase
    step: str  # what the release does now, in a few words
    message: str  # the Ready condition's message: why it waits, failed, or what serves
    percent: int | None = None
    done: int | None = None
    total: int | None = None
    loss: float | None = None
    eta: str | None = None
    score: float | None = None
    serving: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def line(self) -> str:
        """One plain line: no colours, no cursor movement (a log, a CI job)."""
        parts = [f"{self.phase}: {self.step}"]
        if self.percent is not None:
            parts.append(f"{self.percent}% ({self.done}/{self.total})")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        if self.eta:
            parts.append(f"ETA {self.eta}")
        if self.score is not None:
            parts.append(f"score {self.score:g}")
        text = ", ".join(parts)
        return f"{text} - {self.message}" if self.message else text


def snapshot(obj: dict[str, Any]) -> Snapshot:
    status = obj.get("status") or {}
    phase = status.get("phase") or "Queued"
    ready = cond.get(status.get("conditions") or [], "Ready") or {}
    progress = status.get("progress") or {}
    serving = status.get("serving") or {}
    return Snapshot(
        phase=phase,
        step=_step(phase, progress, serving),
        message=ready.get("message") or ("waiting for the operator" if phase == "Queued" else ""),
        percent=progress.get("percent"),
        done=progress.get("step"),
        total=progress.get("total"),
        loss=progress.get("loss"),
        eta=progress.get("eta"),
        score=(status.get("evaluation") or {}).get("score"),
        serving=serving.get("endpoint") if phase == Phase.SERVING else None,
    )


def _step(phase: str, progress: dict[str, Any], serving: dict[str, Any]) -> str:
    if phase == Phase.TRAINING:
        return "training" + (f" (epoch {progress['epoch']:g})" if progress.get("epoch") is not None else "")
    if phase == Phase.EVALUATING:
        return "scoring the benchmark"
    if phase == Phase.ROLLING_OUT:
        return "rolling out the serving pods"
    if phase == Phase.SERVING:
        return f"serving {serving.get('revision') or ''}".strip()
    if phase in ("Queued", Phase.PENDING):
        return "queued"
    return phase.lower()


def outcome(snap: Snapshot) -> int | None:
    """The exit code once the release has settled (None: not yet)."""
    if snap.phase in SUCCEEDED:
        return 0
    if snap.phase in FAILED:
        return 1
    return None
