"""Serving closed by default, on the real control plane: the generated key Secret, the key only in
the pods' environment, the NetworkPolicies, a rotation rolling the pods, the refused flags."""

from __future__ import annotations

import base64
import json

from tests.cases import load_example
from tests.support.cluster import Cluster, wait_for

from .test_lifecycle import release_doc, wait_phase


def secret_value(cluster: Cluster, namespace: str, name: str, key: str) -> str:
    data = cluster.get_json("secret", name, "-n", namespace)["data"]
    return base64.b64decode(data[key]).decode()


def test_a_release_without_a_key_serves_with_one_generated_for_its_target(cluster: Cluster, operator, namespace):
    cluster.apply(release_doc(namespace, "tiny-k1", "v0.1.0"))
    st = wait_phase(cluster, namespace, "tiny-k1", "Serving")
    assert st["serving"]["apiKeySecret"] == "tiny-legal-api-key/api-key"
    key = secret_value(cluster, namespace, "tiny-legal-api-key", "api-key")
    assert len(key) >= 43, "at least 32 random bytes"  # token_urlsafe(48) is 64 characters

    deploy = cluster.get_json("deployment", "tiny-legal", "-n", namespace)
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["TWLEGAL_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "tiny-legal-api-key", "key": "api-key"}
    assert pod["automountServiceAccountToken"] is False
    version = deploy["spec"]["template"]["metadata"]["annotations"]["twlegal.io/api-key-version"]
    assert version == cluster.get_json("secret", "tiny-legal-api-key", "-n", namespace)["metadata"]["resourceVersion"]

    # The key's value is nowhere but in its Secret: not in the release, its events, the pod specs
    # or the operator's log.
    everywhere = "\n".join(
        cluster.kubectl("get", kind, "-n", namespace, "-o", "yaml").stdout
        for kind in ("lmr", "events", "deployments", "jobs", "pods", "configmaps", "networkpolicies")
    )
    assert key not in everywhere and key not in operator.logs()

    # A NetworkPolicy for the target and one for each Job.
    policies = {p["metadata"]["name"]: p["spec"] for p in cluster.get_json("networkpolicies", "-n", namespace)["items"]}
    assert {"tiny-legal", "tiny-k1-train", "tiny-k1-eval"} <= set(policies)
    assert policies["tiny-legal"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]
    train = policies["tiny-k1-train"]  # the API server drops the empty lists: deny all, both ways
    assert train["policyTypes"] == ["Ingress", "Egress"] and not train.get("ingress") and not train.get("egress")


def test_a_rotated_key_rolls_the_pods_and_a_new_release_keeps_the_targets_key(cluster: Cluster, operator, namespace):
    cluster.apply(release_doc(namespace, "tiny-k2", "v0.1.0"))
    wait_phase(cluster, namespace, "tiny-k2", "Serving")
    old = secret_value(cluster, namespace, "tiny-legal-api-key", "api-key")
    before = cluster.get_json("deployment", "tiny-legal", "-n", namespace)["metadata"]["generation"]

    # The rotation as the README describes it: the new key in place, the old one as previous.
    patch = {"stringData": {"api-key": "rotated-key-" + "x" * 40, "previous-api-key": old}}
    cluster.kubectl("patch", "secret", "tiny-legal-api-key", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    version = cluster.get_json("secret", "tiny-legal-api-key", "-n", namespace)["metadata"]["resourceVersion"]

    def rolled() -> bool:
        deploy = cluster.get_json("deployment", "tiny-legal", "-n", namespace)
        annotations = deploy["spec"]["template"]["metadata"]["annotations"]
        return annotations.get("twlegal.io/api-key-version") == version and deploy["metadata"]["generation"] > before

    wait_for("the pods to roll with the rotated key", rolled, timeout=60)
    wait_phase(cluster, namespace, "tiny-k2", "Serving")

    # The next release of the target uses the same generated Secret: its clients keep their key.
    cluster.apply(release_doc(namespace, "tiny-k3", "v0.2.0"))
    st = wait_phase(cluster, namespace, "tiny-k3", "Serving")
    assert st["serving"]["apiKeySecret"] == "tiny-legal-api-key/api-key"
    assert secret_value(cluster, namespace, "tiny-legal-api-key", "api-key").startswith("rotated-key-")


def test_auth_none_is_the_only_open_endpoint_and_refused_flags_never_reach_the_cluster(
    cluster: Cluster, operator, namespace
):
    cluster.apply(release_doc(namespace, "tiny-open", "v0.1.0", auth="none", target="tiny-open"))
    st = wait_phase(cluster, namespace, "tiny-open", "Serving")
    assert "apiKeySecret" not in st["serving"]
    container = cluster.get_json("deployment", "tiny-open", "-n", namespace)["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert "TWLEGAL_API_KEY" not in {e["name"] for e in container["env"]}
    assert cluster.kubectl("get", "secret", "tiny-open-api-key", "-n", namespace, check=False).returncode != 0

    doc = load_example()
    doc["metadata"] = {"name": "tiny-hijack", "namespace": namespace}
    doc["spec"]["serving"]["extraArgs"] = ["--dtype", "float32", "--api-key=letmein"]
    proc = cluster.apply(doc, check=False)
    assert proc.returncode != 0 and "spec.serving.extraArgs[2]" in proc.stderr, proc.stderr
