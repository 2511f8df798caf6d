"""metav1.Condition bookkeeping (pure)."""

from __future__ import annotations

from typing import Any

TRAINED, EVALUATED, DEPLOYED, READY = "Trained", "Evaluated", "Deployed", "Ready"
INPUTS_PINNED = "InputsPinned"  # not a stage: whether the release says exactly what it trains on
ORDER = (TRAINED, EVALUATED, DEPLOYED, READY, INPUTS_PINNED)


def get(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]], type_: str) -> bool:
    cond = get(conditions, type_)
    return bool(cond and cond.get("status") == "True")


def is_false(conditions: list[dict[str, Any]], type_: str) -> bool:
    cond = get(conditions, type_)
    return bool(cond and cond.get("status") == "False")


def set_condition(conditions: list[dict[str, Any]], type_: str, status: str, reason: str, message: str,
                  *, generation: int | None, now: str) -> list[dict[str, Any]]:
    """A new list with `type_` set; lastTransitionTime moves only when the status changes."""
    old = get(conditions, type_)
    changed = old is None or old.get("status") != status
    cond = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    rest = [c for c in conditions if c.get("type") != type_]
    return sorted([*rest, cond], key=lambda c: ORDER.index(c["type"]) if c["type"] in ORDER else len(ORDER))
