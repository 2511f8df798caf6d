"""metav1.Condition bookkeeping (pure)."""

from __future__ import annotations

from typing import Any

from ..api.reasons import CONDITION_TYPES as ORDER
from ..api.reasons import DEPLOYED, EVALUATED, INPUTS_PINNED, READY, TRAINED

__all__ = [
    "DEPLOYED",
    "EVALUATED",
    "INPUTS_PINNED",
    "ORDER",
    "READY",
    "TRAINED",
    "get",
    "is_false",
    "is_true",
    "set_condition",
]


def get(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]], type_: str) -> bool:
    cond = get(conditions, type_)
    return bool(cond and cond.get("status") == "True")


def is_false(conditions: list[dict[str, Any]], type_: str) -> bool:
    cond = get(conditions, type_)
    return bool(cond and cond.get("status") == "False")


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """A new list with `type_` set; lastTransitionTime moves only when the status changes."""
    old = get(conditions, type_)
    changed = old is None or old.get("status") != status
    cond = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": now if old is None or changed else old.get("lastTransitionTime", now),
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    rest = [c for c in conditions if c.get("type") != type_]
    return sorted([*rest, cond], key=lambda c: ORDER.index(c["type"]) if c["type"] in ORDER else len(ORDER))
