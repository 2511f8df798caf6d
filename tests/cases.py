"""Loading the shared test tables (used by the unit and the real-API-server tests alike)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from twlegal import yamlio

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TINY_RELEASE = EXAMPLES / "release-tiny-cpu.yaml"
REFERENCE_RELEASE = EXAMPLES / "release-2024-11-13.yaml"
INVALID_CASES = Path(__file__).parent / "cases" / "invalid-releases.yaml"

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _steps(path: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _STEP.findall(path)]


def _apply(doc: dict[str, Any], path: str, value: Any, *, delete: bool = False) -> None:
    *parents, last = _steps(path)
    node: Any = doc
    for step in parents:
        node = node[step]
    if delete:
        del node[last]
    else:
        node[last] = value


def load_example(path: Path = TINY_RELEASE) -> dict[str, Any]:
    return yamlio.load_all(path.read_text(encoding="utf-8"))[0]


def invalid_cases() -> list[dict[str, Any]]:
    """Each case with its `document` built from the tiny example."""
    base = load_example()
    cases = []
    for case in yamlio.load_all(INVALID_CASES.read_text(encoding="utf-8"))[0]:
        doc = copy.deepcopy(base)
        for path, value in (case.get("set") or {}).items():
            _apply(doc, path, copy.deepcopy(value))
        for path in case.get("unset") or []:
            _apply(doc, path, None, delete=True)
        cases.append({**case, "document": doc})
    return cases
