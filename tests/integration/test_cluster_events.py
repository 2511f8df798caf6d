"""The events a shared GPU cluster produces every week, on the real control plane (issue 15): a
serving release's own Deployment changing, two releases of one version, a name reused, a failing
first reconcile, pods that cannot start or run out of memory, restarts with many releases of one
target, OwnerReferencesPermissionEnforcement, and deleting the release that serves. (Two operator
replicas: test_leader_election.py.)"""

from __future__ import annotations

import json
import re
import time

from tests.integration.test_lifecycle import conditions, events, pinned, release_doc, status, wait_phase
from tests.support.cluster import Cluster, wait_for

SERVING_SETTLED = ("Serving", "Superseded")


def patch_spec(cluster: Cluster, namespace: str, name: str, spec: dict) -> None:
    cluster.kubectl("patch", "lmr", name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec}))


def deployment(cluster: Cluster, namespace: str, target: str = "tiny-legal") -> dict:
    return cluster.get_json("deployment", target, "-n", namespace)


def phases_seen(cluster: Cluster, namespace: str, name: str, seconds: float) -> set[str]:
    """Every phase the release shows over a while (polled)."""
    seen, end = set(), time.monotonic() + seconds
    while time.monotonic() < end:
        seen.add(status(cluster, namespace, name).get("phase"))
        time.sleep(0.5)
    return seen


# --- 1. a serving release's own Deployment changes --------------------------------------------------


def test_a_serving_releases_update_rolls_in_place_and_a_failed_one_returns_to_its_last_good_spec(
    cluster: Cluster, operator, fake_node, namespace
):
    cluster.apply(release_doc(namespace, "tiny-v1", "v0.1.0"))
    wait_phase(cluster, namespace, "tiny-v1", "Serving")
    good = deployment(cluster, namespace)
    good_args = good["spec"]["template"]["spec"]["containers"][0]["args"]

    # New pods of the edit never become ready (no spare GPU for the surge pod): the old pod serves on.
    fake_node.change("tiny-v1", serving="never-ready")
    patch_spec(cluster, namespace, "tiny-v1", {"serving": {"extraArgs": ["--enforce-eager"]}})
    wait_for(
        "the update to be rolled back",
        lambda: conditions(status(cluster, namespace, "tiny-v1"))["Deployed"]["reason"] == "UpdateRolledBack",
        timeout=120,
    )
    st = status(cluster, namespace, "tiny-v1")
    assert st["phase"] == "Serving" and conditions(st)["Ready"]["status"] == "True"
    assert "rolled back" in conditions(st)["Deployed"]["message"]
    assert {"UpdateStarted", "UpdateRolledBack"} <= set(events(cluster, namespace, "tiny-v1"))
    wait_for(
        "the last good spec back and available",
        lambda: (
            (d := deployment(cluster, namespace))["spec"]["template"]["spec"]["containers"][0]["args"] == good_args
            and d["status"].get("availableReplicas") == 1
            and d["status"].get("updatedReplicas") == 1
        ),
        timeout=60,
    )
    assert pinned(cluster, namespace) == "tiny-v1"
    assert phases_seen(cluster, namespace, "tiny-v1", 6) == {"Serving"}, "the rejected update is not retried"

    # A new edit that can roll (pods ready again) rolls in place, and becomes the last good spec.
    fake_node.change("tiny-v1", serving="ready")
    patch_spec(cluster, namespace, "tiny-v1", {"serving": {"extraArgs": [], "replicas": 2}})
    wait_for(
        "the scaled update to complete",
        lambda: (
            (s := status(cluster, namespace, "tiny-v1"))["phase"] == "Serving"
            and conditions(s)["Deployed"]["reason"] == "RolloutComplete"
            and s["serving"].get("readyReplicas") == 2
            and "rejectedUpdate" not in s["serving"]
        ),
        timeout=90,
    )
    assert deployment(cluster, namespace)["spec"]["replicas"] == 2


# --- 2. two releases of one target with the same version ------------------------------------------


def test_two_releases_of_the_same_version_end_with_exactly_one_serving(
    cluster: Cluster, operator, fake_node, namespace
):
    cluster.apply([release_doc(namespace, "tiny-a", "v0.1.0"), release_doc(namespace, "tiny-b", "v0.1.0")])
    try:
        wait_for(
            "both to settle",
            lambda: {status(cluster, namespace, n).get("phase") for n in ("tiny-a", "tiny-b")} == set(SERVING_SETTLED),
            timeout=120,
        )
    except AssertionError:
        for n in ("tiny-a", "tiny-b"):
            print(n, json.dumps(status(cluster, namespace, n), indent=1))
        print(operator.logs()[-5000:])
        raise
    serving = next(n for n in ("tiny-a", "tiny-b") if status(cluster, namespace, n)["phase"] == "Serving")
    other = "tiny-b" if serving == "tiny-a" else "tiny-a"
    assert status(cluster, namespace, other)["serving"]["supersededBy"] == serving
    assert pinned(cluster, namespace) == serving
    assert phases_seen(cluster, namespace, serving, 4) == {"Serving"}


# --- 3. a release deleted and created again under the same name -------------------------------------


def test_a_recreated_release_never_reads_or_reuses_the_earlier_ones_children(
    cluster: Cluster, operator, fake_node, namespace
):
    fake_node.behave("tiny-x", training="hold")
    cluster.apply(release_doc(namespace, "tiny-x", "v0.1.0"))
    wait_phase(cluster, namespace, "tiny-x", "Training")
    first_uid = cluster.get_json("lmr", "tiny-x", "-n", namespace)["metadata"]["uid"]
    # Hold the earlier Job in deletion (as a slow garbage collector or a stuck pod would).
    hold = {"metadata": {"finalizers": ["twlegal.io/test-hold"]}}
    cluster.kubectl("patch", "job", "tiny-x-train", "-n", namespace, "--type=merge", "-p", json.dumps(hold))
    cluster.kubectl("delete", "lmr", "tiny-x", "-n", namespace, "--wait=true")
    wait_for(
        "the earlier Job to be deleting",
        lambda: cluster.get_json("job", "tiny-x-train", "-n", namespace)["metadata"].get("deletionTimestamp"),
    )
    fake_node.behave("tiny-x", training="succeed")
    cluster.apply(release_doc(namespace, "tiny-x", "v0.1.0"))
    wait_for(
        "the new release to wait for the earlier Job",
        lambda: conditions(status(cluster, namespace, "tiny-x")).get("Ready", {}).get("reason") == "StaleChildren",
    )
    st = status(cluster, namespace, "tiny-x")
    assert "Job/tiny-x-train" in conditions(st)["Ready"]["message"] and st["phase"] == "Pending"
    assert "training" not in st or st["training"].get("startTime") is None, "nothing read from the earlier Job"

    cluster.kubectl(
        "patch",
        "job",
        "tiny-x-train",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/metadata/finalizers"}]',
    )
    wait_phase(cluster, namespace, "tiny-x", "Serving", timeout=120)
    job = cluster.get_json("job", "tiny-x-train", "-n", namespace)
    second_uid = cluster.get_json("lmr", "tiny-x", "-n", namespace)["metadata"]["uid"]
    assert second_uid != first_uid
    assert [ref["uid"] for ref in job["metadata"]["ownerReferences"]] == [second_uid]
    config = cluster.get_json("configmap", "tiny-x-train", "-n", namespace)
    assert [ref["uid"] for ref in config["metadata"]["ownerReferences"]] == [second_uid]


# --- 4. a first reconcile that fails is retried ---------------------------------------------------


def test_a_first_reconcile_that_fails_is_retried_until_it_succeeds(cluster: Cluster, operator, fake_node, namespace):
    # The API server refuses every Job in this namespace for a while (as a 500 or an outage would).
    policy = f"deny-jobs-{namespace}"
    cluster.apply(
        [
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": policy},
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": {
                        "resourceRules": [
                            {
                                "apiGroups": ["batch"],
                                "apiVersions": ["v1"],
                                "operations": ["CREATE"],
                                "resources": ["jobs"],
                            }
                        ]
                    },
                    "validations": [{"expression": "false", "message": "Jobs are refused for now"}],
                },
            },
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": policy},
                "spec": {
                    "policyName": policy,
                    "validationActions": ["Deny"],
                    "matchResources": {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                    },
                },
            },
        ]
    )
    probe = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "probe", "namespace": namespace}}
    probe["spec"] = {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}
    wait_for(
        "the policy to refuse Jobs",
        lambda: (
            "refused for now"
            in cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False).stderr
        ),
    )
    try:
        cluster.apply(release_doc(namespace, "tiny-retry", "v0.1.0"))
        wait_for("a refused reconcile", lambda: "refused for now" in operator.logs(), timeout=30)
        assert status(cluster, namespace, "tiny-retry").get("phase") is None, "no status yet: its reconcile failed"
    finally:
        cluster.kubectl("delete", f"validatingadmissionpolicybinding/{policy}", f"validatingadmissionpolicy/{policy}")
    # No other event reaches the release: only the retry can create its Job.
    wait_phase(cluster, namespace, "tiny-retry", "Serving", timeout=120)
    assert len(cluster.get_json("jobs", "-n", namespace, "-l", "app.kubernetes.io/component=training")["items"]) == 1


# --- 5. pods that cannot start --------------------------------------------------------------------


def test_an_image_that_cannot_be_pulled_is_named_and_fails_the_release_after_its_start_deadline(
    cluster: Cluster, operator, fake_node, namespace
):
    fake_node.behave("tiny-typo", training="image-pull")
    doc = release_doc(namespace, "tiny-typo", "v0.1.0")
    doc["spec"]["training"]["startDeadlineSeconds"] = 15
    cluster.apply(doc)
    wait_for(
        "the pull error in status",
        lambda: (
            conditions(status(cluster, namespace, "tiny-typo")).get("Trained", {}).get("reason") == "ImagePullBackOff"
        ),
        timeout=30,
    )
    assert "Back-off pulling image" in conditions(status(cluster, namespace, "tiny-typo"))["Trained"]["message"]
    assert "ImagePullBackOff" in events(cluster, namespace, "tiny-typo")
    st = wait_phase(cluster, namespace, "tiny-typo", "Failed", timeout=60)
    assert "startDeadlineSeconds" in conditions(st)["Trained"]["message"]
    assert "StartDeadlineExceeded" in events(cluster, namespace, "tiny-typo")
    wait_for(
        "its Job gone (the waiting pod held a node's GPUs)",
        lambda: cluster.kubectl("get", "job", "tiny-typo-train", "-n", namespace, check=False).returncode != 0,
    )


def test_an_unschedulable_pod_keeps_waiting_and_says_why(cluster: Cluster, operator, fake_node, namespace):
    doc = release_doc(namespace, "tiny-nogpu", "v0.1.0")
    doc["spec"]["training"]["startDeadlineSeconds"] = 10
    doc["spec"]["training"]["resources"]["nodeSelector"] = {"twlegal.io/gpu-pool": "h200"}
    cluster.apply(doc)
    wait_for(
        "the scheduler's reason in status",
        lambda: (
            conditions(status(cluster, namespace, "tiny-nogpu")).get("Trained", {}).get("reason") == "Unschedulable"
        ),
        timeout=60,
    )
    message = conditions(status(cluster, namespace, "tiny-nogpu"))["Trained"]["message"]
    assert re.search(r"0/\d+ nodes are available", message) and "waiting for a node" in message
    assert phases_seen(cluster, namespace, "tiny-nogpu", 15) == {"Pending"}, "past its start deadline, it still waits"


# --- 6. OOMKilled --------------------------------------------------------------------------------


def test_an_oom_killed_trainer_is_retried_a_bounded_number_of_times_and_named(
    cluster: Cluster, operator, fake_node, namespace
):
    fake_node.behave("tiny-oom", training="oom")
    doc = release_doc(namespace, "tiny-oom", "v0.1.0")
    doc["spec"]["training"]["maxRetries"] = 1
    cluster.apply(doc)
    st = wait_phase(cluster, namespace, "tiny-oom", "Failed", timeout=120)
    trained = conditions(st)["Trained"]
    assert trained["reason"] == "OOMKilled" and "perDeviceBatchSize" in trained["message"]
    assert "OOMKilled in 2 of 2 attempts" in trained["message"]
    assert "OOMKilled" in events(cluster, namespace, "tiny-oom")
    selector = "twlegal.io/release=tiny-oom,app.kubernetes.io/component=training"
    assert len(cluster.get_json("pods", "-n", namespace, "-l", selector)["items"]) == 2, "maxRetries bounds it"


# --- 7. a restart with many releases of one target ------------------------------------------------


def reconciles(operator, namespace: str) -> float:
    """This namespace's reconciles (the session's operator holds the other tests' releases too)."""
    prefix = f'twlegal_reconciles_total{{namespace="{namespace}"}}'
    return next((float(ln.split()[-1]) for ln in operator.metrics().splitlines() if ln.startswith(prefix)), 0.0)


def test_a_restart_reconciles_linearly_in_the_releases_of_one_target(cluster: Cluster, operator, fake_node, namespace):
    n = 8
    names = [f"tiny-{i}" for i in range(n)]
    cluster.apply([release_doc(namespace, name, f"v0.1.{i}") for i, name in enumerate(names)])
    wait_for("all to settle", lambda: status(cluster, namespace, names[-1]).get("phase") == "Serving", timeout=240)
    wait_for(
        "the rest superseded",
        lambda: all(status(cluster, namespace, name).get("phase") == "Superseded" for name in names[:-1]),
        timeout=60,
    )
    operator.kill()
    operator.start()
    counts = [reconciles(operator, namespace)]
    while len(counts) < 3 or counts[-1] != counts[-3]:  # quiet for two polls in a row
        time.sleep(2)
        counts.append(reconciles(operator, namespace))
    requests = [ln for ln in operator.metrics().splitlines() if ln.startswith("twlegal_api_requests_total{")]
    print(f"restart with {n} releases of one target: {counts[-1]:.0f} reconciles; requests: {requests}")
    # Each release once at resume and once for its prune Job (kopf lists every Job again; a settled
    # release's stage Jobs are skipped), a few for the Deployment: linear. A fan-out to every peer of
    # the target would add n*n/2.
    assert counts[-1] <= 3 * n + 4, f"{counts[-1]} reconciles for {n} releases of one target after a restart"
    assert status(cluster, namespace, names[-1])["phase"] == "Serving"


# --- 9. OwnerReferencesPermissionEnforcement ------------------------------------------------------


def test_the_control_plane_enforces_owner_reference_permissions(cluster: Cluster, operator, fake_node, namespace):
    """Every test here runs with the plugin on; without `update` on legalmodelreleases/finalizers an
    owner reference with blockOwnerDeletion is refused, so the operator's Jobs prove the chart grants it."""
    cluster.apply(release_doc(namespace, "tiny-owned", "v0.1.0", enabled=False))
    wait_phase(cluster, namespace, "tiny-owned", "Completed", timeout=90)
    uid = cluster.get_json("lmr", "tiny-owned", "-n", namespace)["metadata"]["uid"]
    cluster.kubectl("create", "serviceaccount", "no-finalizers", "-n", namespace)
    cluster.kubectl("create", "role", "cm-writer", "-n", namespace, "--verb=create", "--resource=configmaps")
    cluster.kubectl(
        "create",
        "rolebinding",
        "cm-writer",
        "-n",
        namespace,
        "--role=cm-writer",
        f"--serviceaccount={namespace}:no-finalizers",
    )
    owned = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "owned",
            "namespace": namespace,
            "ownerReferences": [
                {
                    "apiVersion": "twlegal.io/v1alpha1",
                    "kind": "LegalModelRelease",
                    "name": "tiny-owned",
                    "uid": uid,
                    "blockOwnerDeletion": True,
                }
            ],
        },
    }
    refused = cluster.kubectl(
        "create",
        "-f",
        "-",
        "--as",
        f"system:serviceaccount:{namespace}:no-finalizers",
        input=json.dumps(owned),
        check=False,
    )
    assert refused.returncode != 0 and "cannot set blockOwnerDeletion" in refused.stderr, refused.stderr
    job = cluster.get_json("job", "tiny-owned-train", "-n", namespace)
    assert job["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True


# --- 10. deleting the release that serves -----------------------------------------------------------


def test_deleting_the_serving_release_repins_the_target_and_deleting_the_last_removes_it(
    cluster: Cluster, operator, fake_node, namespace
):
    cluster.apply(release_doc(namespace, "tiny-v1", "v0.1.0"))
    wait_phase(cluster, namespace, "tiny-v1", "Serving")
    cluster.apply(release_doc(namespace, "tiny-v2", "v0.2.0"))
    wait_phase(cluster, namespace, "tiny-v2", "Serving")
    wait_phase(cluster, namespace, "tiny-v1", "Superseded")
    target_uid = deployment(cluster, namespace)["metadata"]["uid"]

    cluster.kubectl("delete", "lmr", "tiny-v2", "-n", namespace, "--wait=true")
    st = wait_phase(cluster, namespace, "tiny-v1", "Serving", timeout=90)
    assert st["serving"]["revision"] == "v0.1.0" and "supersededBy" not in st["serving"]
    assert pinned(cluster, namespace) == "tiny-v1"
    assert deployment(cluster, namespace)["metadata"]["uid"] == target_uid, "the target was never deleted"

    cluster.kubectl("delete", "lmr", "tiny-v1", "-n", namespace, "--wait=true")
    for kind in ("deployment", "service"):
        wait_for(
            f"the target's {kind} gone with its last release",
            lambda kind=kind: cluster.kubectl("get", kind, "tiny-legal", "-n", namespace, check=False).returncode != 0,
            timeout=60,
        )
