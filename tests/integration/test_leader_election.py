"""Leader election on the real control plane: two `twlegal operator` processes on one install (the
chart's service account, one Lease in its namespace). Only the holder acts; killing it hands the
Lease to the standby within a bounded time, and the children exist once.

Both processes run on this host, so the Events' reportingInstance (the host name) is the same for
both: which process acted is read from each one's own log as well.
"""

from __future__ import annotations

import collections
import contextlib
import subprocess
import time

import yaml
from kubernetes import client

from tests.integration.test_lifecycle import release_doc, wait_phase
from tests.support.cluster import ROOT, Cluster, wait_for
from tests.support.operator import NAMESPACE, SERVICE_ACCOUNT_USER, OperatorProcess
from twlegal_dev import binaries

LEASE = "twlegal-operator"


def holder(cluster: Cluster) -> str:
    try:
        lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease(LEASE, NAMESPACE, _request_timeout=5)
    except client.ApiException as exc:
        if exc.status == 404:
            return ""
        raise
    return (lease.spec and lease.spec.holder_identity) or ""


def training_jobs(cluster: Cluster, namespace: str) -> collections.Counter[str]:
    jobs = cluster.get_json("jobs", "-n", namespace, "-l", "app.kubernetes.io/component=training")["items"]
    return collections.Counter(j["metadata"]["labels"].get("twlegal.io/release", "?") for j in jobs)


def operator_events(cluster: Cluster, namespace: str, release: str) -> list[dict]:
    items = cluster.get_json("events.v1.events.k8s.io", "-n", namespace)["items"]
    return [
        e
        for e in items
        if e.get("regarding", {}).get("name") == release and e.get("reportingController") == "twlegal.io/operator"
    ]


def acted_on(proc: OperatorProcess, namespace: str, release: str) -> bool:
    # The reconciler logs each phase transition as "<namespace>/<release>: <old> -> <new>".
    return f"{namespace}/{release}: " in proc.logs()


def test_two_replicas_one_acts_and_killing_it_hands_over(cluster: Cluster, operator, fake_node, namespace):
    lease_s, retry_s = float(operator.env["TWLEGAL_LEASE_SECONDS"]), float(operator.env["TWLEGAL_LEASE_RETRY_SECONDS"])
    # The standby sees the last renewal within a retry of it, waits the lease out, and takes the
    # Lease at its next retry: lease + 2 retries after the kill, plus a margin for a loaded machine.
    bound = lease_s + 2 * retry_s + 3
    operator.stop()  # the session's operator releases the Lease; two replicas of our own instead
    first, second = operator.another("replica-a"), operator.another("replica-b")
    try:
        first.start()
        second.start()
        by_identity = {wait_for(f"{p.log} to name its identity", lambda p=p: p.identity): p for p in (first, second)}
        lead_id = wait_for("one replica to hold the Lease", lambda: (h := holder(cluster)) in by_identity and h, 30)
        leader = by_identity[lead_id]
        standby = second if leader is first else first
        wait_for("the standby to say who leads", lambda: f"standing by: {lead_id} leads" in standby.logs(), 15)
        for _ in range(3 * int(retry_s) + 3):  # it stays so: exactly one holder, renewing
            assert holder(cluster) == lead_id
            time.sleep(1)

        fake_node.behave("elect-1", training="hold")
        cluster.apply(release_doc(namespace, "elect-1", "v0.1.0", target="elect-one"))
        wait_phase(cluster, namespace, "elect-1", "Training")
        assert training_jobs(cluster, namespace) == {"elect-1": 1}
        assert acted_on(leader, namespace, "elect-1") and not acted_on(standby, namespace, "elect-1")
        events = operator_events(cluster, namespace, "elect-1")
        assert len({e["reportingInstance"] for e in events}) == 1, events
        reasons = collections.Counter(e["reason"] for e in events)
        assert reasons["TrainingJobCreated"] == 1 and max(reasons.values()) == 1, reasons

        leader.kill()
        killed = time.monotonic()
        wait_for("the standby to take the Lease", lambda: holder(cluster) == standby.identity, bound + 10, 0.1)
        handover = time.monotonic() - killed
        print(f"\nleader SIGKILLed; the standby held the Lease {handover:.1f}s later (bound {bound:.0f}s)")
        assert handover <= bound, f"handover took {handover:.1f}s, more than {bound:.0f}s"

        fake_node.behave("elect-2", training="hold")
        cluster.apply(release_doc(namespace, "elect-2", "v0.2.0", target="elect-two"))
        wait_phase(cluster, namespace, "elect-2", "Training")
        assert acted_on(standby, namespace, "elect-2") and not acted_on(leader, namespace, "elect-2")
        # The new leader resumed elect-1 too (start-up listing, resyncs): still one Job each.
        time.sleep(float(operator.env["TWLEGAL_RESYNC_SECONDS"]) + 2)
        assert training_jobs(cluster, namespace) == {"elect-1": 1, "elect-2": 1}
        assert operator_events(cluster, namespace, "elect-1") == events, "the new leader repeated nothing"
        assert f'User "{SERVICE_ACCOUNT_USER}" cannot' not in leader.logs() + standby.logs()

        started = time.monotonic()
        standby.stop()  # SIGTERM, as a rollout or a drain stops a pod: the leader hands the Lease over
        assert standby.proc.returncode == 0 and "released Lease" in standby.logs(), standby.logs()[-3000:]
        assert time.monotonic() - started < 15, "a clean stop is quick"
        assert holder(cluster) == ""
    finally:
        first.stop()
        second.stop()  # a clean stop releases the Lease: the session's operator takes it at once
        operator.start()
        wait_for("the session's operator to lead again", lambda: holder(cluster) == operator.identity, 30)


def set_holder(cluster: Cluster, identity: str, seconds: int) -> None:
    api = client.CoordinationV1Api(cluster.api)
    lease = api.read_namespaced_lease(LEASE, NAMESPACE)
    lease.spec.holder_identity, lease.spec.lease_duration_seconds = identity, seconds
    api.replace_namespaced_lease(LEASE, NAMESPACE, lease)


def test_a_leader_that_loses_the_lease_stops_acting(cluster: Cluster, operator):
    retry_s = float(operator.env["TWLEGAL_LEASE_RETRY_SECONDS"])
    operator.stop()
    replica = operator.another("replica-lost")
    try:
        replica.start()
        wait_for("the replica to hold the Lease", lambda: holder(cluster) == replica.identity, 30)
        # Someone else takes the Lease (as a partitioned leader finds when it reconnects): at its next
        # renewal the replica sees it, stops kopf and exits 1 (a pod then restarts as a candidate).
        set_holder(cluster, "intruder", 3600)
        taken = time.monotonic()
        wait_for("the replica to exit", lambda: replica.proc.poll() is not None, 30)
        stopped = time.monotonic() - taken
        print(f"\nLease taken from the leader; its process exited {stopped:.1f}s later")
        assert replica.proc.returncode == 1, replica.logs()[-3000:]
        assert "taken by another or deleted: stopping" in replica.logs()
        assert stopped <= retry_s + 10, f"{stopped:.1f}s"
        assert holder(cluster) == "intruder", "the old leader never writes over the new holder"
    finally:
        replica.stop()
        with contextlib.suppress(client.ApiException):
            set_holder(cluster, "", 1)  # released: the session's operator takes it at once
        operator.start()
        wait_for("the session's operator to lead again", lambda: holder(cluster) == operator.identity, 30)


def test_the_chart_runs_replicas_with_a_lease_of_their_own(cluster: Cluster, operator):
    def render(*values: str) -> subprocess.CompletedProcess:
        chart = str(ROOT / "charts" / "twlegal")
        argv = [str(binaries.find("helm")), "template", "twlegal", chart, "-n", NAMESPACE, *values]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    docs = [d for d in yaml.safe_load_all(render("--set", "operator.replicas=2").stdout) if d]
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    assert deploy["spec"]["replicas"] == 2 and deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TWLEGAL_LEADER_ELECT"]["value"] == "true"
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} >= {
        ("Role", "twlegal-operator-leader-election"),
        ("RoleBinding", "twlegal-operator-leader-election"),
    }
    refused = render("--set", "operator.leaderElection=false", "--set", "operator.replicas=2")
    assert refused.returncode != 0 and "replicas" in refused.stderr, refused.stderr
    off = [d for d in yaml.safe_load_all(render("--set", "operator.leaderElection=false").stdout) if d]
    assert next(d for d in off if d["kind"] == "Deployment")["spec"]["strategy"]["type"] == "Recreate"
    assert not any(d["metadata"]["name"].endswith("-leader-election") for d in off)

    def can(verb: str, resource: str, namespace: str) -> bool:
        argv = ("auth", "can-i", verb, resource, "--as", SERVICE_ACCOUNT_USER, "-n", namespace)
        return cluster.kubectl(*argv, check=False).stdout.strip() == "yes"

    assert can("create", "leases.coordination.k8s.io", NAMESPACE)
    assert can("get", f"leases.coordination.k8s.io/{LEASE}", NAMESPACE)
    assert can("update", f"leases.coordination.k8s.io/{LEASE}", NAMESPACE)
    assert not can("update", "leases.coordination.k8s.io/kube-scheduler", NAMESPACE), "only its own Lease"
    assert not can("delete", f"leases.coordination.k8s.io/{LEASE}", NAMESPACE)
    assert not can("create", "leases.coordination.k8s.io", "kube-system"), "never outside its namespace"
