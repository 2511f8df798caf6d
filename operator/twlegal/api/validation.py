"""Validate a LegalModelRelease document the way the API server will, before it reaches a cluster.

Two passes, both driven by the one source of truth, and both always run, so one call reports every
problem of a document:
1. the pydantic models (types, enums, bounds, patterns, unknown fields);
2. the CRD's own x-kubernetes-validations CEL rules, evaluated with a CEL interpreter on the
   defaulted object, so cross-field rules are written once and enforced in both places. When the
   first pass failed there is no defaulted object: the rules run on the document as written, and a
   rule that cannot be evaluated there (it reads a field the first pass already reported) is skipped.
Each problem names the field path, e.g. `spec.training.hyperparameters.learningRate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError
from pydantic import ValidationError

from .common import CEL_KEY, DNS_LABEL, QUANTITY_PATTERN, RELATIVE_PATH_PATTERN, REPO_ID_PATTERN
from .crd import open_api_schema
from .release import API_VERSION, KIND, LegalModelRelease
from .spec import VERSION_PATTERN

PATTERN_HINTS = {
    VERSION_PATTERN: "a version vMAJOR.MINOR.PATCH such as v1.0.0 or v2024.11.13",
    QUANTITY_PATTERN: "a quantity such as 8, 500m or 64Gi",
    REPO_ID_PATTERN: "a repository id such as owner/name",
    RELATIVE_PATH_PATTERN: "a path relative to the storage volume (no leading '/')",
    DNS_LABEL: "a DNS label (lower-case letters, digits and '-', starting with a letter)",
}


@dataclass(frozen=True)
class Problem:
    """One reason a document is invalid."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _data_path(loc: tuple[Any, ...], data: Any) -> str:
    """Turn a pydantic error location into a field path, skipping union-member tags."""
    path, node = "", data
    for part in loc:
        if isinstance(node, dict) and not (part in _TAGS and part not in node):
            path, node = _join(path, part), node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            path, node = _join(path, part), node[part] if part < len(node) else None
        # else: a tag pydantic adds for a union member or a validator; not part of the data
    return path


# Tags pydantic puts in error locations for union members (int-or-string quantities).
_TAGS = {"int", "str", "float", "bool", "constrained-str", "function-after", "function-plain"}


def _pydantic_problems(error: ValidationError, data: Any) -> list[Problem]:
    problems = []
    for err in error.errors(include_url=False):
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field (check the spelling: see `kubectl explain lmr.spec`)"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] in ("literal_error", "enum"):
            message = f"unsupported value {err.get('input')!r}: {err['msg']}"
        elif err["type"] == "string_pattern_mismatch":
            hint = PATTERN_HINTS.get(err.get("ctx", {}).get("pattern", ""))
            message = f"{err.get('input')!r} is not {hint}" if hint else message
        problems.append(Problem(_data_path(tuple(err["loc"]), data), message))
    return _dedupe(problems)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    # A union (int-or-string quantity) reports once per member; keep the most telling line.
    seen: dict[str, Problem] = {}
    for problem in problems:
        if problem.path not in seen or seen[problem.path].message.startswith("Input should be a valid"):
            seen[problem.path] = problem
    return list(seen.values())


@cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _cel_problems(schema: dict[str, Any], value: Any, path: str, *, partial: bool = False) -> list[Problem]:
    """The CEL rules of `schema` over `value` and its children. `partial`: `value` did not pass the
    schema, so a rule may read a missing or mistyped field; such a rule is skipped."""
    problems: list[Problem] = []
    for entry in schema.get(CEL_KEY, []):
        if "oldSelf" in entry["rule"]:
            continue  # transition rules need the stored object: only the API server can check them
        try:
            result = _program(entry["rule"]).evaluate({"self": json_to_cel(value)})
            if isinstance(result, CELEvalError):
                raise result
        except (CELEvalError, TypeError, ValueError) as exc:
            if not partial:  # pragma: no cover - a rule bug, not a user error
                problems.append(Problem(path, f"rule {entry['rule']!r} failed to evaluate: {exc}"))
            continue
        if not bool(result):
            where = path + entry.get("fieldPath", "") if entry.get("fieldPath") else path
            problems.append(Problem(where, entry["message"]))
    if isinstance(value, dict):
        for key, child in value.items():
            sub = schema.get("properties", {}).get(key)
            if sub is not None:
                problems += _cel_problems(sub, child, _join(path, key), partial=partial)
    elif isinstance(value, list) and "items" in schema:
        for index, child in enumerate(value):
            problems += _cel_problems(schema["items"], child, _join(path, index), partial=partial)
    return problems


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    return open_api_schema()


def validate_document(doc: Any) -> tuple[LegalModelRelease | None, list[Problem]]:
    """Return the parsed release, or None and the problems that keep it out of the cluster."""
    if not isinstance(doc, dict):
        return None, [Problem("", "a LegalModelRelease must be a YAML mapping")]
    if doc.get("apiVersion") != API_VERSION:
        return None, [Problem("apiVersion", f"must be {API_VERSION}, got {doc.get('apiVersion')!r}")]
    if doc.get("kind") != KIND:
        return None, [Problem("kind", f"must be {KIND}, got {doc.get('kind')!r}")]
    try:
        release = LegalModelRelease.from_object(doc)
    except ValidationError as error:
        raw = {key: value for key, value in doc.items() if key != "status"}
        schema_problems = _pydantic_problems(error, doc)
        reported = {p.path for p in schema_problems}
        rule_problems = [p for p in _cel_problems(_schema(), raw, "", partial=True) if p.path not in reported]
        return None, schema_problems + rule_problems
    # CEL sees what the API server sees: the object after defaulting.
    defaulted = {**doc, "spec": release.spec.to_wire()}
    defaulted.pop("status", None)
    problems = _cel_problems(_schema(), defaulted, "")
    return (None if problems else release), problems
