"""The CRD generated from the pydantic models: current, documented, and valid for Kubernetes."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from tests.cases import REFERENCE_RELEASE, TINY_RELEASE, invalid_cases, load_example
from twlegal import yamlio
from twlegal.api.crd import custom_resource_definition, open_api_schema
from twlegal.cli import crd_yaml, main

ROOT = Path(__file__).resolve().parents[2]
CRD_FILES = [
    ROOT / "crds" / "twlegal.io_legalmodelreleases.yaml",
    ROOT / "charts" / "twlegal" / "files" / "crds" / "twlegal.io_legalmodelreleases.yaml",
]
K8S_VERSION = "1.36.0"


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_checked_in_crd_is_current(path):
    assert path.read_text(encoding="utf-8") == crd_yaml(), f"{path} is stale: run `make crds`"


def test_crd_validates_against_kubernetes_openapi():
    kubernetes_validate.validate(custom_resource_definition(), K8S_VERSION, strict=True)


def _walk(schema, path="spec"):
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def test_every_field_has_a_description_for_kubectl_explain():
    schema = open_api_schema()
    missing = [
        path
        for top in ("spec", "status")
        for path, node in _walk(schema["properties"][top], top)
        if not path.endswith(("[]", "{}")) and not node.get("description")
    ]
    assert missing == []


def test_schema_is_structural():
    """What the API server demands of a structural schema; the integration tier installs it for real."""
    for path, node in _walk(open_api_schema()["properties"]["spec"]):
        assert "$ref" not in node and "title" not in node, path
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
        else:
            assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, path
        assert "null" not in str(node.get("type")), path
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node, f"{path}: CEL cost estimation needs a maxLength"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path}: CEL cost estimation needs a maxItems"


def test_inputs_are_immutable_by_transition_rules():
    spec = open_api_schema()["properties"]["spec"]
    for field in ("version", "baseModel", "datasets"):
        assert {"rule": "self == oldSelf"}.items() <= spec["properties"][field]["x-kubernetes-validations"][-1].items()
    hyper = spec["properties"]["training"]["properties"]["hyperparameters"]
    assert hyper["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"


def test_crd_identity_printer_columns_and_status_subresource():
    crd = custom_resource_definition()
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("LegalModelRelease", "legalmodelreleases", ["lmr"])
    assert crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Version"] == ".spec.version"
    assert columns["Phase"] == ".status.phase"
    assert columns["Score"] == ".status.evaluation.score"
    assert columns["Serving"] == ".status.serving.revision"
    assert columns["Age"] == ".metadata.creationTimestamp"
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]


@pytest.mark.parametrize("path", [REFERENCE_RELEASE, TINY_RELEASE], ids=lambda p: p.name)
def test_examples_validate_against_the_crd_schema(path):
    # The CRD's OpenAPI v3 schema uses draft-4 semantics (boolean exclusiveMinimum).
    jsonschema.Draft4Validator(open_api_schema()).validate(load_example(path))


def test_crd_schema_rejects_what_pydantic_rejects():
    """The two encodings of the contract agree on the structural cases (CEL aside)."""
    validator = jsonschema.Draft4Validator(open_api_schema())
    structural = [
        c
        for c in invalid_cases()
        if c["id"]
        in {
            "version-not-semver",
            "zero-learning-rate",
            "zero-stage-4",
            "unknown-optimizer",
            "memory-not-a-quantity",
            "no-datasets",
            "storage-reclaim-policy-unknown",
            "serving-target-not-dns",
        }
    ]
    assert len(structural) == 8
    for case in structural:
        assert list(validator.iter_errors(case["document"])), case["id"]


def test_cli_prints_the_crd(capsys):
    assert main(["crd"]) == 0
    assert yamlio.load_all(capsys.readouterr().out)[0] == custom_resource_definition()
