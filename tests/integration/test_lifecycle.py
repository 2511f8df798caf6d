"""A release's lifecycle, driven by the operator against the real control plane.

The operator runs as its own process with the chart's service account; the real scheduler binds
pods to a fake GPU node whose pods the fake kubelet moves along (tests/support/fake_kubelet.py);
the real Job and Deployment controllers do the rest.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from tests.cases import load_example
from tests.support.cluster import Cluster, wait_for
from twlegal import yamlio
from twlegal.api.release import LegalModelRelease
from twlegal.contracts import ServingLaunch
from twlegal.render import OperatorSettings, render_stage

TIMEOUT = 90


def release_doc(namespace: str, name: str, version: str, **serving) -> dict:
    doc = copy.deepcopy(load_example())
    doc["metadata"] = {"name": name, "namespace": namespace}
    doc["spec"]["version"] = version
    doc["spec"]["serving"].update(serving)
    return doc


def status(cluster: Cluster, namespace: str, name: str) -> dict:
    return cluster.get_json("lmr", name, "-n", namespace).get("status") or {}


def wait_phase(cluster: Cluster, namespace: str, name: str, *phases: str, timeout: float = TIMEOUT) -> dict:
    st = wait_for(
        f"{name} to reach {phases}",
        lambda: (s := status(cluster, namespace, name)).get("phase") in phases and s,
        timeout,
    )
    capture(cluster, namespace, name)
    return st


def capture(cluster: Cluster, namespace: str, name: str) -> None:
    """With TWLEGAL_CAPTURE_DIR set, keep the release as the API server returned it, one file per
    phase: the Argo CD health check's test data come from these runs."""
    directory = os.environ.get("TWLEGAL_CAPTURE_DIR")
    if not directory:
        return
    obj = cluster.get_json("lmr", name, "-n", namespace)
    obj["metadata"].pop("managedFields", None)
    phase = (obj.get("status") or {}).get("phase", "none")
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / f"{phase.lower()}.yaml").write_text(yamlio.dump(obj))


def conditions(st: dict) -> dict[str, dict]:
    return {c["type"]: c for c in st.get("conditions", [])}


def pinned(cluster: Cluster, namespace: str, target: str = "tiny-legal") -> str:
    deploy = cluster.get_json("deployment", target, "-n", namespace)
    return deploy["spec"]["template"]["metadata"]["labels"]["twlegal.io/release"]


def events(cluster: Cluster, namespace: str, name: str) -> list[str]:
    items = cluster.get_json("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
    return [e["reason"] for e in items]


def test_release_goes_from_apply_to_serving(cluster: Cluster, operator, fake_node, namespace):
    fake_node.behave("tiny-v1", run_seconds=3)
    doc = release_doc(namespace, "tiny-v1", "v0.1.0")
    cluster.apply(doc)

    wait_phase(cluster, namespace, "tiny-v1", "Pending", "Training")
    job = cluster.get_json("job", "tiny-v1-train", "-n", namespace)
    stored = LegalModelRelease.from_object(cluster.get_json("lmr", "tiny-v1", "-n", namespace))
    settings = OperatorSettings.from_env(operator.env)
    expected = next(o for o in render_stage(stored, "training", settings) if o["kind"] == "Job")
    got_pod, want_pod = job["spec"]["template"]["spec"], expected["spec"]["template"]["spec"]
    for key in ("image", "command", "args", "env", "resources", "volumeMounts"):
        assert got_pod["containers"][0][key] == want_pod["containers"][0][key], key
    assert job["spec"]["podFailurePolicy"] == expected["spec"]["podFailurePolicy"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == stored.metadata.uid
    wait_phase(cluster, namespace, "tiny-v1", "Training")

    st = wait_phase(cluster, namespace, "tiny-v1", "Serving")
    cond = conditions(st)
    assert all(cond[t]["status"] == "True" for t in ("Trained", "Evaluated", "Deployed", "Ready")), cond
    assert st["observedGeneration"] == stored.metadata.generation
    assert st["training"]["finalLoss"] == 0.42 and st["training"]["globalStep"] == 40
    assert st["evaluation"] == {**st["evaluation"], "score": 55.0, "passed": True}
    assert st["serving"]["revision"] == "v0.1.0" and st["serving"]["readyReplicas"] == 1
    assert st["artifact"]["checksum"].startswith("sha256:")

    deploy = cluster.get_json("deployment", "tiny-legal", "-n", namespace)
    launch = ServingLaunch.from_argv(deploy["spec"]["template"]["spec"]["containers"][0]["args"])
    assert launch.revision == "v0.1.0" and launch.model == f"/mnt/twlegal/{st['storage']['artifactPath']}"
    assert st["storage"]["artifactPath"].startswith("releases/twlegal/tiny-legal/v0.1.0/tiny-v1-")
    assert launch.checksum == st["artifact"]["checksum"], "the server pins the weights that were published"
    assert pinned(cluster, namespace) == "tiny-v1"

    table = cluster.kubectl("get", "lmr", "-n", namespace).stdout
    header = table.split("\n")[0].split()
    assert header[:7] == ["NAME", "VERSION", "PHASE", "PROGRESS", "ETA", "SCORE", "SERVING"]
    assert table.split("\n")[1].split()[:5] == ["tiny-v1", "v0.1.0", "Serving", "55", "v0.1.0"]
    assert {"TrainingJobCreated", "TrainingStarted", "EvaluationStarted", "RolloutStarted", "Serving"} <= set(
        events(cluster, namespace, "tiny-v1")
    )
    assert 'twlegal_releases{phase="Serving"}' in operator.metrics()


def test_second_release_rolls_the_target_and_supersedes_the_first(cluster: Cluster, operator, fake_node, namespace):
    cluster.apply(release_doc(namespace, "tiny-v1", "v0.1.0"))
    wait_phase(cluster, namespace, "tiny-v1", "Serving")
    cluster.apply(release_doc(namespace, "tiny-v2", "v0.2.0"))

    st2 = wait_phase(cluster, namespace, "tiny-v2", "Serving")
    assert st2["serving"]["previousRevision"] == "v0.1.0"
    st1 = wait_phase(cluster, namespace, "tiny-v1", "Superseded")
    assert st1["serving"]["supersededBy"] == "tiny-v2"
    assert conditions(st1)["Ready"]["status"] == "False"
    assert pinned(cluster, namespace) == "tiny-v2"
    owners = cluster.get_json("deployment", "tiny-legal", "-n", namespace)["metadata"]["ownerReferences"]
    assert {(o["name"], o.get("controller", False)) for o in owners} == {("tiny-v2", True), ("tiny-v1", False)}
    assert len(cluster.get_json("deployments", "-n", namespace)["items"]) == 1


def test_failing_training_job_ends_failed_with_the_reason(cluster: Cluster, operator, fake_node, namespace):
    fake_node.behave("tiny-bad", training="fail")
    cluster.apply(release_doc(namespace, "tiny-bad", "v0.1.0"))
    st = wait_phase(cluster, namespace, "tiny-bad", "Failed")
    trained = conditions(st)["Trained"]
    assert trained["status"] == "False" and trained["reason"] == "PodFailurePolicy"
    assert "KeyError" in trained["message"]
    # a code error is not retried: one pod only
    training_pods = "twlegal.io/release=tiny-bad,app.kubernetes.io/component=training"
    assert len(cluster.get_json("pods", "-n", namespace, "-l", training_pods)["items"]) == 1
    assert cluster.kubectl("get", "deployment", "tiny-legal", "-n", namespace, check=False).returncode != 0
    assert "TrainingPodFailurePolicy" in events(cluster, namespace, "tiny-bad")


def test_diverged_training_is_rejected_and_never_served(cluster: Cluster, operator, fake_node, namespace):
    fake_node.behave("tiny-nan", training="diverge")
    cluster.apply(release_doc(namespace, "tiny-nan", "v0.1.0"))
    st = wait_phase(cluster, namespace, "tiny-nan", "Rejected")
    assert conditions(st)["Trained"]["reason"] == "LossDiverged"
    assert cluster.kubectl("get", "deployment", "tiny-legal", "-n", namespace, check=False).returncode != 0


def test_release_below_its_min_score_is_rejected_and_the_old_revision_keeps_serving(
    cluster: Cluster, operator, fake_node, namespace
):
    cluster.apply(release_doc(namespace, "tiny-v1", "v0.1.0"))
    wait_phase(cluster, namespace, "tiny-v1", "Serving")
    fake_node.behave("tiny-v2-weak", score=12.5)
    cluster.apply(release_doc(namespace, "tiny-v2-weak", "v0.2.0"))
    st = wait_phase(cluster, namespace, "tiny-v2-weak", "Rejected")
    assert conditions(st)["Evaluated"]["reason"] == "ScoreBelowThreshold"
    assert st["evaluation"]["score"] == 12.5 and st["evaluation"]["passed"] is False
    assert pinned(cluster, namespace) == "tiny-v1"
    assert status(cluster, namespace, "tiny-v1")["phase"] == "Serving"


def test_rollout_whose_pods_never_become_ready_is_rolled_back(cluster: Cluster, operator, fake_node, namespace):
    cluster.apply(release_doc(namespace, "tiny-v1", "v0.1.0"))
    wait_phase(cluster, namespace, "tiny-v1", "Serving")
    fake_node.behave("tiny-v2-broken", serving="never-ready")
    cluster.apply(release_doc(namespace, "tiny-v2-broken", "v0.2.0"))
    wait_phase(cluster, namespace, "tiny-v2-broken", "RollingOut")
    st = wait_phase(cluster, namespace, "tiny-v2-broken", "RolledBack", timeout=120)
    assert conditions(st)["Ready"]["reason"] == "RolledBack"
    assert "v0.1.0 again" in conditions(st)["Ready"]["message"]
    wait_for(
        "the old revision to be pinned and available again",
        lambda: (
            pinned(cluster, namespace) == "tiny-v1"
            and cluster.get_json("deployment", "tiny-legal", "-n", namespace)["status"].get("availableReplicas") == 1
        ),
    )
    assert wait_phase(cluster, namespace, "tiny-v1", "Serving")["serving"]["revision"] == "v0.1.0"


def test_operator_killed_at_each_stage_creates_no_duplicates(cluster: Cluster, operator, fake_node, namespace):
    fake_node.behave("tiny-r", training="hold", evaluation="hold", serving="hold")
    cluster.apply(release_doc(namespace, "tiny-r", "v0.1.0"))
    try:
        # At each stage: SIGKILL the operator, let the stage finish while none runs, start it again.
        for phase, release_stage in (
            ("Training", {"training": "succeed"}),
            ("Evaluating", {"evaluation": "score"}),
            ("RollingOut", {"serving": "ready"}),
        ):
            wait_phase(cluster, namespace, "tiny-r", phase)
            operator.kill()
            fake_node.change("tiny-r", **release_stage)
            operator.start()
        st = wait_phase(cluster, namespace, "tiny-r", "Serving")
        operator.kill()
        operator.start()
        wait_for("a settled status after restart", lambda: status(cluster, namespace, "tiny-r") == st, timeout=15)
    finally:
        if operator.proc.poll() is not None:
            operator.start()

    def count(kind: str, selector: str) -> int:
        return len(cluster.get_json(kind, "-n", namespace, "-l", selector)["items"])

    assert count("jobs", "app.kubernetes.io/component=training") == 1
    assert count("jobs", "app.kubernetes.io/component=evaluation") == 1
    assert count("pods", "app.kubernetes.io/component=training") == 1, "training ran once"
    assert count("pods", "app.kubernetes.io/component=evaluation") == 1
    assert len(cluster.get_json("deployments", "-n", namespace)["items"]) == 1
    assert len(cluster.get_json("replicasets", "-n", namespace)["items"]) == 1, "no new rollout after restarts"
    assert status(cluster, namespace, "tiny-r")["serving"]["revision"] == "v0.1.0"


def test_operator_holds_exactly_the_chart_permissions(cluster: Cluster, operator):
    from tests.support.operator import SERVICE_ACCOUNT_USER

    def can(verb: str, resource: str, *extra: str) -> bool:
        proc = cluster.kubectl("auth", "can-i", verb, resource, *extra, "--as", SERVICE_ACCOUNT_USER, "-A", check=False)
        return proc.stdout.strip() == "yes"

    assert can("watch", "legalmodelreleases.twlegal.io")
    assert can("patch", "legalmodelreleases.twlegal.io", "--subresource=status")
    assert can("create", "jobs.batch") and can("patch", "deployments.apps")
    assert can("get", "secrets") and can("create", "secrets") and can("patch", "networkpolicies.networking.k8s.io")
    # The reclaim finalizer (a release's metadata) and stopping a deleted release's Jobs.
    assert can("patch", "legalmodelreleases.twlegal.io") and can("delete", "jobs.batch")
    assert can("update", "legalmodelreleases.twlegal.io", "--subresource=finalizers")
    # OwnerReferencesPermissionEnforcement: changing a target's owner references needs delete on it.
    assert can("delete", "deployments.apps") and can("delete", "services")
    for verb, resource in [
        ("update", "legalmodelreleases.twlegal.io"),
        ("delete", "legalmodelreleases.twlegal.io"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("update", "secrets"),
        ("patch", "secrets"),
        ("delete", "secrets"),
        ("list", "nodes"),
        ("create", "pods"),
        ("delete", "persistentvolumeclaims"),
    ]:
        assert not can(verb, resource), f"operator may {verb} {resource}"
    # Everything the lifecycle tests did, the operator did with exactly these permissions.
    assert f'User "{SERVICE_ACCOUNT_USER}" cannot' not in operator.logs()
