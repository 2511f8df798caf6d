"""The CRD on a real API server: every bad release is refused at `kubectl apply`, naming the field."""

from __future__ import annotations

import copy
import json

import pytest

from tests.cases import invalid_cases, load_example
from tests.support.cluster import Cluster

CASES = invalid_cases()


@pytest.fixture(scope="module")
def ns(cluster: Cluster, crd) -> str:
    name = "admission"
    cluster.kubectl("create", "namespace", name, check=False)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _in(doc: dict, namespace: str) -> dict:
    doc = copy.deepcopy(doc)
    doc["metadata"]["namespace"] = namespace
    return doc


def test_the_valid_examples_are_accepted_with_defaults_applied(cluster: Cluster, ns: str):
    doc = _in(load_example(), ns)
    doc["metadata"]["name"] = "accepted-defaults"
    cluster.apply(doc)
    stored = cluster.get_json("lmr", "accepted-defaults", "-n", ns)
    assert stored["spec"]["training"]["hyperparameters"]["maxGradNorm"] == 1.0
    assert stored["spec"]["storage"]["artifactPath"] == "releases/{model}/{version}/{name}-{inputs}"
    assert stored["spec"]["storage"]["retention"] == {
        "keepCheckpointsAfterSuccess": 0,
        "keepCheckpointsAfterFailure": 1,
    }
    assert stored["spec"]["training"]["resources"]["gpuResourceName"] == "nvidia.com/gpu"


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_api_server_rejects_invalid_release_naming_the_field(cluster: Cluster, ns: str, case):
    doc = _in(case["document"], ns)
    proc = cluster.apply(doc, check=False)
    assert proc.returncode != 0, f"{case['id']} was accepted"
    assert case["field"] in proc.stderr, proc.stderr
    assert cluster.kubectl("get", "lmr", doc["metadata"]["name"], "-n", ns, check=False).returncode != 0


@pytest.mark.parametrize(
    "field,value",
    [
        ("version", "v0.2.0"),
        ("baseModel", {"path": "base/another-model"}),
        ("datasets", [{"path": "datasets/other.jsonl"}]),
        ("training.hyperparameters.learningRate", 0.5),
    ],
)
def test_inputs_cannot_change_after_creation(cluster: Cluster, ns: str, field, value):
    doc = _in(load_example(), ns)
    doc["metadata"]["name"] = "immutable-" + field.split(".")[-1].lower()
    cluster.apply(doc)
    node = doc["spec"]
    *parents, last = field.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    proc = cluster.apply(doc, check=False)
    assert proc.returncode != 0
    assert "is immutable" in proc.stderr and f"spec.{field.split('.')[0]}" in proc.stderr, proc.stderr


def test_mutable_fields_can_change(cluster: Cluster, ns: str):
    doc = _in(load_example(), ns)
    doc["metadata"]["name"] = "mutable-serving"
    cluster.apply(doc)
    doc["spec"]["serving"]["replicas"] = 3
    cluster.apply(doc)
    assert cluster.get_json("lmr", "mutable-serving", "-n", ns)["spec"]["serving"]["replicas"] == 3


def test_a_typo_is_reported_by_strict_field_validation_not_dropped(cluster: Cluster, ns: str):
    doc = _in(load_example(), ns)
    doc["metadata"]["name"] = "typo"
    doc["spec"]["training"]["checkpointEverySetps"] = 5
    proc = cluster.kubectl("apply", "--validate=strict", "-f", "-", input=json.dumps(doc), check=False)
    assert proc.returncode != 0
    assert "checkpointEverySetps" in proc.stderr


def test_kubectl_explain_shows_the_field_descriptions(cluster: Cluster, crd):
    out = cluster.kubectl("explain", "lmr.spec.training.hyperparameters.warmupSteps").stdout
    assert "warm-up" in out
