"""A serving target's releases as an update history: what happened to each, from its status.

The seed model's card keeps this table by hand ("v1.1.0 ... Model collapsed"); here every cell
comes from a release object, so the table cannot say more, or other, than the runs did.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from ..api.release import LegalModelRelease
from ..api.status import Phase
from ..policies import conditions as cond
from ..policies.plan import version_key
from ..render import names

MISSING = "—"
SUMMARY_WIDTH = 60  # the plain table cuts spec.card.summary here; JSON and Markdown keep all of it


@dataclass(frozen=True)
class Row:
    version: str
    date: str | None  # YYYY-MM-DD of what happened last: started serving, failed, was rejected
    phase: str | None
    score: float | None
    reason: str  # one line: why the release is where it is
    summary: str | None  # spec.card.summary: what the release changes (written by its author)
    name: str
    namespace: str
    benchmark: str | None = None
    serving_since: str | None = None
    served_until: str | None = None
    superseded_by: str | None = None
    finished: str | None = None  # full timestamp behind `date`

    def to_json(self) -> dict[str, Any]:
        return {_camel(k): v for k, v in asdict(self).items()}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def one_line(message: str) -> str:
    """A condition message on one line. A Python traceback the kubelet kept from the trainer's log
    becomes its last line (the exception), which is what a reader needs."""
    if "Traceback (most recent call last):" in message:
        head, _, tail = message.partition("Traceback (most recent call last):")
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        message = head + (lines[-1] if lines else "")
    return re.sub(r"\s+", " ", message).strip(" ;")


def _reason(phase: str | None, serving: dict[str, Any], ready: str) -> str:
    """The Ready condition's message says why a release failed, was rejected or rolled back; for
    the serving ones, the serving history in status says more."""
    since, until = (serving.get("servingSince") or "")[:10], (serving.get("servedUntil") or "")[:10]
    if phase == Phase.SERVING and since:
        previous = serving.get("previousRevision")
        return f"serves {serving.get('target')} since {since}" + (f", replacing {previous}" if previous else "")
    if phase == Phase.SUPERSEDED and serving.get("supersededBy"):
        served = f"served {since} to {until}; " if since and until else ("" if since else "never served; ")
        return f"{served}superseded by {serving['supersededBy']}"
    return ready


def row(release: LegalModelRelease) -> Row:
    status = release.status.to_wire() if release.status else {}
    conditions = status.get("conditions") or []
    ready = cond.get(conditions, cond.READY) or {}
    serving = status.get("serving") or {}
    evaluation = status.get("evaluation") or {}
    phase = status.get("phase")
    reason = _reason(phase, serving, one_line(ready.get("message") or ""))
    finished = (
        (serving.get("servingSince") if phase in (Phase.SERVING, Phase.SUPERSEDED) else None)
        or (
            ready.get("lastTransitionTime")
            if phase not in (None, Phase.PENDING, Phase.TRAINING, Phase.EVALUATING)
            else None
        )
        or (status.get("training") or {}).get("completionTime")
        or release.metadata.creation_timestamp
    )
    card = release.spec.card
    return Row(
        version=release.spec.version,
        date=finished[:10] if finished else None,
        phase=phase,
        score=evaluation.get("score"),
        reason=reason or (phase or "not reconciled yet"),
        summary=card.summary if card else None,
        name=release.name,
        namespace=release.namespace,
        benchmark=evaluation.get("benchmark"),
        serving_since=serving.get("servingSince"),
        served_until=serving.get("servedUntil"),
        superseded_by=serving.get("supersededBy"),
        finished=finished,
    )


def of_target(releases: Iterable[LegalModelRelease], target: str) -> list[LegalModelRelease]:
    """The releases of a serving target; `target` may also be the released model's repository id."""
    return [r for r in releases if target in (names.serving_target(r), r.spec.model)]


def rows(releases: Iterable[LegalModelRelease]) -> list[Row]:
    """Newest version first, as a card's update history reads."""
    ordered = sorted(releases, key=lambda r: (version_key(r.spec.version), r.name), reverse=True)
    return [row(r) for r in ordered]


def _score(value: float | None) -> str:
    return MISSING if value is None else f"{value:g}"


def table(history: list[Row]) -> str:
    """Aligned columns for a terminal, kubectl style; the reason comes last and whole."""
    with_summary = any(r.summary for r in history)
    lines = [["VERSION", "DATE", "PHASE", "SCORE", *(["CHANGES"] if with_summary else []), "REASON"]]
    for r in history:
        summary = r.summary or MISSING
        if len(summary) > SUMMARY_WIDTH:
            summary = summary[: SUMMARY_WIDTH - 1] + "…"
        lines.append(
            [
                r.version,
                r.date or MISSING,
                r.phase or MISSING,
                _score(r.score),
                *([summary] if with_summary else []),
                r.reason,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    return "".join(
        "   ".join([*(cell.ljust(w) for cell, w in zip(line, widths, strict=False)), line[-1]]) + "\n" for line in lines
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(history: list[Row]) -> str:
    """The card's "Model Update History" table."""
    out = ["| Update Date | Model Version | Phase | Score | What happened | Key Changes |", "|---|---|---|---|---|---|"]
    for r in history:
        out.append(
            f"| {r.date or MISSING} | {r.version} | {r.phase or MISSING} | {_score(r.score)} | "
            f"{_cell(r.reason)} | {_cell(r.summary or MISSING)} |"
        )
    return "\n".join(out) + "\n"


def to_json(target: str, history: list[Row]) -> str:
    return (
        json.dumps({"target": target, "releases": [r.to_json() for r in history]}, indent=2, ensure_ascii=False) + "\n"
    )
