"""Generate the CustomResourceDefinition from the pydantic models (pure; no cluster access).

pydantic's JSON Schema and a Kubernetes structural schema differ in a few ways, each handled
here once: references are inlined, `Optional[X]` becomes X (absent, never null), JSON Schema
2020's numeric exclusive bounds become OpenAPI v3's boolean form, quantities become
int-or-string, and titles are dropped.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .common import CEL_KEY, QUANTITY_MARK
from .release import (
    API_VERSION,
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
)
from .spec import LegalModelReleaseSpec
from .status import LegalModelReleaseStatus

PRINTER_COLUMNS = [
    {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary"},
    {"name": "ETA", "type": "string", "jsonPath": ".status.progress.eta"},
    {"name": "Score", "type": "number", "jsonPath": ".status.evaluation.score"},
    {"name": "Serving", "type": "string", "jsonPath": ".status.serving.revision"},
    {"name": "Target", "type": "string", "jsonPath": ".status.serving.target", "priority": 1},
    {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason', "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_DROP = {"title", "$defs", "discriminator"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        rules = target.get(CEL_KEY, []) + node.get(CEL_KEY, [])
        node = {**target, **node}  # the field's description wins over the model's docstring
        if rules:
            node[CEL_KEY] = rules
    if node.pop(QUANTITY_MARK, False):
        quantity = {
            "description": node.get("description", ""),
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": _quantity_pattern(node),
            "x-kubernetes-int-or-string": True,
        }
        if node.get("default") is not None:
            quantity["default"] = node["default"]
        return quantity
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) == 1:  # Optional[X]: X, and "absent" instead of null
            del node["anyOf"]
            node = {**_structural(branches[0], defs), **{k: v for k, v in node.items() if k != "default"}}
            if node.get("default", "absent") is None:
                del node["default"]
            return _structural(node, defs)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "exclusiveMinimum" in node and not isinstance(node["exclusiveMinimum"], bool):
        node["minimum"], node["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node and not isinstance(node["exclusiveMaximum"], bool):
        node["maximum"], node["exclusiveMaximum"] = node["exclusiveMaximum"], True
    if node.get("default", "absent") is None:
        del node["default"]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" in out and "additionalProperties" in out:
        del out["additionalProperties"]  # closed by pruning; kubectl's strict validation reports typos
    out.pop("propertyNames", None)
    return out


def _quantity_pattern(node: dict[str, Any]) -> str:
    for branch in node.get("anyOf", []):
        if "pattern" in branch:
            return str(branch["pattern"])
    raise ValueError("quantity field without a string pattern")


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    raw: dict[str, Any] = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    return schema


def open_api_schema() -> dict[str, Any]:
    """The openAPIV3Schema of the served version."""
    return {
        "type": "object",
        "description": "A LegalModelRelease turns one declarative file into a fine-tuned, evaluated "
        "and served Taiwan-legal language model.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of the object: twlegal.io/v1alpha1."},
            "kind": {"type": "string", "description": "Kind of the object: LegalModelRelease."},
            "metadata": {"type": "object"},
            "spec": schema_of(LegalModelReleaseSpec),
            "status": schema_of(LegalModelReleaseStatus),
        },
        "x-kubernetes-validations": [
            {
                "rule": f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
                "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters "
                "(child Jobs and ConfigMaps append a suffix to it)",
            }
        ],
    }


def custom_resource_definition() -> dict[str, Any]:
    """The CRD as the API server takes it."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "twlegal", "app.kubernetes.io/part-of": "twlegal"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["twlegal", "all"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": open_api_schema()},
                }
            ],
        },
    }


__all__ = ["API_VERSION", "custom_resource_definition", "open_api_schema", "schema_of"]
