"""decide() on the events a shared cluster produces every week (issue 15); the integration tier
runs each on the real control plane."""

from __future__ import annotations

import copy

from tests.unit.test_policies import NOW, SETTINGS, _passed, job, release
from twlegal.policies import Observed, Peer, ServingView, decide
from twlegal.policies import serving as serving_policy
from twlegal.policies.children import owned_by, start_problem, tells_why_not_started
from twlegal.reconciler import Reconciler


def condition(decision, type_):
    return next(c for c in decision.status["conditions"] if c["type"] == type_)


def applied(decision, kind="Deployment"):
    return next(o for o in decision.apply if o["kind"] == kind)


def observed(deployment, *, ready=True, deadline=False):
    """A Deployment as the API server returns it after `deployment` was applied and its controller acted."""
    d = copy.deepcopy(deployment)
    d["metadata"]["generation"] = 3
    n = d["spec"]["replicas"]
    reason = "ProgressDeadlineExceeded" if deadline else ("NewReplicaSetAvailable" if ready else "ReplicaSetUpdated")
    d["status"] = {
        "observedGeneration": 3,
        "replicas": n if ready else n + 1,
        "updatedReplicas": n if ready else 1,
        "availableReplicas": n,
        "readyReplicas": n,
        "conditions": [{"type": "Progressing", "reason": reason}],
    }
    return d


def serve(rel, deployment, peers=None):
    peers = peers or (Peer.of(rel),)
    return decide(rel, Observed(**{**_passed(rel).__dict__, "serving": ServingView(deployment, peers)}), SETTINGS, NOW)


def serving_release(**spec):
    status = {"phase": "Serving", "serving": {"servingSince": NOW}, "conditions": []}
    return release("tiny-v1", "v0.1.0", status=status, **spec)


# --- 1. a serving release's own pod template changes -------------------------------------------------


def test_a_serving_releases_own_update_that_fails_returns_to_its_last_good_spec_and_it_stays_serving():
    rel = serving_release()
    first = serve(release("tiny-v1", "v0.1.0", status={"phase": "RollingOut"}), None)  # the first rollout pins
    good = applied(serve(rel, observed(applied(first))))  # ... completes: its spec is the last good one
    assert serving_policy.last_good(good)["hash"] == serving_policy.spec_hash(good["spec"])

    # An edit of extraArgs (or an operator upgrade with a new default image) renders a new spec.
    edited = serving_release(serving={**rel.spec.serving.model_dump(by_alias=True), "extraArgs": ["--enforce-eager"]})
    update = serve(edited, observed(good))
    assert update.status["phase"] == "Serving" and update.events == []
    new = applied(update)
    assert new["spec"] != good["spec"] and serving_policy.last_good(new) == serving_policy.last_good(good)

    progressing = serve(edited, observed(new, ready=False))
    assert progressing.status["phase"] == "Serving" and condition(progressing, "Ready")["status"] == "True"
    assert condition(progressing, "Deployed")["reason"] == "Updating"
    assert [e.reason for e in progressing.events] == ["UpdateStarted"]

    edited_now = _with_status(edited, progressing)
    failed = serve(edited_now, observed(new, deadline=True, ready=False))
    assert failed.status["phase"] == "Serving", "only a new release is ever rolled back to an older one"
    assert [(e.type, e.reason) for e in failed.events] == [("Warning", "UpdateRolledBack")]
    assert condition(failed, "Deployed")["reason"] == "UpdateRolledBack"
    restored = applied(failed)
    assert restored["spec"] == good["spec"], "the Deployment returns to the spec of its last complete rollout"
    assert restored["spec"]["template"]["metadata"]["labels"]["twlegal.io/release"] == "tiny-v1"
    assert failed.status["serving"]["rejectedUpdate"] == serving_policy.spec_hash(new["spec"])

    # Reconciled again, the rejected update is not tried again until the spec renders differently.
    after = serve(_with_status(edited, failed), observed(restored))
    assert applied(after)["spec"] == good["spec"] and after.events == [] and after.status["phase"] == "Serving"
    again = serving_release(serving={**rel.spec.serving.model_dump(by_alias=True), "extraArgs": ["--seed", "1"]})
    retried = serve(_with_status(again, failed), observed(restored))
    assert applied(retried)["spec"] != good["spec"], "a new edit is a new update"


def _with_status(rel, decision):
    doc = rel.model_dump(by_alias=True, exclude_none=True, mode="json")
    doc["status"] = decision.status
    return type(rel).from_object(doc)


def test_an_update_that_completes_becomes_the_last_good_spec():
    rel = serving_release()
    pinned = applied(serve(release("tiny-v1", "v0.1.0", status={"phase": "RollingOut"}), None))
    scaled = serving_release(serving={**rel.spec.serving.model_dump(by_alias=True), "replicas": 2})
    new = applied(serve(scaled, observed(pinned)))
    done = serve(scaled, observed(new))
    assert done.status["phase"] == "Serving" and condition(done, "Deployed")["reason"] == "RolloutComplete"
    assert serving_policy.last_good(applied(done))["spec"]["replicas"] == 2


# --- 2. two releases of one target with the same version -------------------------------------------


def test_two_releases_of_one_version_agree_on_which_serves():
    a = release("tiny-a", "v0.1.0", uid="uid-a")
    b = release("tiny-b", "v0.1.0", uid="uid-b")
    peers = (
        Peer("tiny-a", "v0.1.0", "RollingOut", True, "2026-11-25T09:00:00Z", "uid-a"),
        Peer("tiny-b", "v0.1.0", "RollingOut", True, "2026-11-25T09:00:00Z", "uid-b"),
    )
    da, db = serve(a, None, peers), serve(b, None, peers)
    phases = sorted([da.status["phase"], db.status["phase"]])
    assert phases == ["RollingOut", "Superseded"], "exactly one of them takes the target"
    assert db.status["phase"] == "RollingOut", "same version and creation time: the name decides, alike on both sides"
    assert da.status["serving"]["supersededBy"] == "tiny-b"


# --- 3. children of an earlier release of the same name ------------------------------------------


def test_children_are_trusted_only_with_this_releases_uid_and_not_being_deleted():
    mine = {"metadata": {"ownerReferences": [{"uid": "uid-1"}]}}
    assert owned_by(mine, "uid-1")
    assert not owned_by(mine, "uid-2")
    assert not owned_by({"metadata": {}}, "uid-1")
    deleting = {"metadata": {"ownerReferences": [{"uid": "uid-1"}], "deletionTimestamp": NOW}}
    assert not owned_by(deleting, "uid-1")


def test_a_release_waits_for_an_earlier_same_named_releases_jobs_to_go():
    rel = release()
    decision = decide(rel, Observed(storage_peers=(), stale_children=("Job/tiny-v1-train",)), SETTINGS, NOW)
    assert decision.create == [] and decision.status["phase"] == "Pending"
    assert condition(decision, "Ready")["reason"] == "StaleChildren"
    assert "Job/tiny-v1-train" in condition(decision, "Ready")["message"]
    assert [e.reason for e in decision.events] == ["StaleChildren"]
    later = decide(_with_status(rel, decision), Observed(stale_children=("Job/tiny-v1-train",)), SETTINGS, NOW)
    assert later.events == [], "said once"
    gone = decide(_with_status(rel, decision), Observed(storage_peers=()), SETTINGS, NOW)
    assert [o["kind"] for o in gone.create] == ["ConfigMap", "NetworkPolicy", "Job"]


# --- 5. pods that cannot start ----------------------------------------------------------------------


def waiting_pod(reason, message="", created="2026-11-25T09:59:00Z", container="trainer"):
    return {
        "metadata": {"creationTimestamp": created},
        "status": {
            "phase": "Pending",
            "containerStatuses": [{"name": container, "state": {"waiting": {"reason": reason, "message": message}}}],
        },
    }


def unschedulable_pod(message):
    return {
        "metadata": {"creationTimestamp": "2026-11-25T08:00:00Z"},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}],
        },
    }


def pending(rel, *pods):
    return decide(rel, Observed(training_job=job(), waiting_pods=tuple(pods)), SETTINGS, NOW)


def test_only_a_pod_that_names_why_it_does_not_start_is_worth_a_reconcile():
    assert tells_why_not_started(waiting_pod("ImagePullBackOff"))
    assert tells_why_not_started(waiting_pod("CreateContainerConfigError"))
    assert tells_why_not_started(unschedulable_pod("0/1 nodes are available: 1 Insufficient nvidia.com/gpu."))
    assert not tells_why_not_started(waiting_pod("ContainerCreating")), "still starting: nothing to say"
    assert not tells_why_not_started({"metadata": {}, "status": {"phase": "Pending"}}), "just created"


def test_an_image_that_cannot_be_pulled_is_named_then_fails_the_release_after_the_start_deadline():
    rel = release()
    pull = waiting_pod("ImagePullBackOff", 'Back-off pulling image "ghcr.io/twlegal/trainer:typo"')
    early = pending(rel, pull)
    assert early.status["phase"] == "Pending"
    trained = condition(early, "Trained")
    assert trained["reason"] == "ImagePullBackOff" and "trainer:typo" in trained["message"]
    assert [(e.type, e.reason) for e in early.events] == [("Warning", "ImagePullBackOff")]
    assert early.delete == []
    late = pending(_with_status(rel, early), waiting_pod("ImagePullBackOff", created="2026-11-25T09:40:00Z"))
    assert late.status["phase"] == "Failed" and condition(late, "Trained")["reason"] == "ImagePullBackOff"
    assert "startDeadlineSeconds" in condition(late, "Trained")["message"]
    assert [o["metadata"]["name"] for o in late.delete] == ["tiny-v1-train"], "its pod holds a node's GPUs"


def test_a_missing_secret_fails_after_the_deadline_the_spec_sets():
    rel = release(training={**release().spec.training.model_dump(by_alias=True), "startDeadlineSeconds": 30})
    config = waiting_pod("CreateContainerConfigError", 'secret "hf-token" not found', created="2026-11-25T09:59:00Z")
    decision = pending(rel, config)
    assert decision.status["phase"] == "Failed" and "hf-token" in condition(decision, "Trained")["message"]


def test_an_unschedulable_pod_waits_and_says_why():
    rel = release()
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    decision = pending(rel, unschedulable_pod(message))
    assert decision.status["phase"] == "Pending" and decision.delete == []
    assert condition(decision, "Trained")["reason"] == "Unschedulable"
    assert message in condition(decision, "Trained")["message"]
    assert start_problem([unschedulable_pod(message)], "trainer").fatal is False


# --- 6. OOMKilled -----------------------------------------------------------------------------------


def test_an_oom_killed_trainer_is_named_with_advice():
    oom = {
        "metadata": {"creationTimestamp": NOW},
        "status": {
            "containerStatuses": [
                {"name": "trainer", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
            ]
        },
    }
    failed = job(("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"), failed=4)
    decision = decide(release(), Observed(training_job=failed, training_pods=(oom,) * 4), SETTINGS, NOW)
    assert decision.status["phase"] == "Failed"
    trained = condition(decision, "Trained")
    assert trained["reason"] == "OOMKilled"
    assert "perDeviceBatchSize" in trained["message"] and "resources.memory" in trained["message"]
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "OOMKilled")]


# --- 10. deleting the release that serves ------------------------------------------------------------


def test_deleting_the_serving_release_hands_the_target_to_the_newest_remaining_one():
    old = release("tiny-v1", "v0.1.0", uid="uid-1", status={"phase": "Superseded"})
    peers = (
        Peer("tiny-v1", "v0.1.0", "Superseded", True, "2026-11-25T09:00:00Z", "uid-1"),
        Peer("tiny-v2", "v0.2.0", "Serving", True, "2026-11-25T09:10:00Z", "uid-2", deleting=True),
    )
    deployment = observed(applied(serve(release("tiny-v2", "v0.2.0", uid="uid-2"), None)))
    decision = serve(old, deployment, peers)
    assert decision.status["phase"] == "RollingOut"
    pinned = applied(decision)
    assert pinned["spec"]["template"]["metadata"]["labels"]["twlegal.io/release"] == "tiny-v1"
    owners = [ref["uid"] for ref in pinned["metadata"]["ownerReferences"]]
    assert owners == ["uid-1"], "a release being deleted owns nothing new"


def test_the_runner_up_owns_the_targets_objects_so_deleting_the_serving_release_keeps_them():
    new = release("tiny-v2", "v0.2.0", uid="uid-2")
    peers = (
        Peer("tiny-v1", "v0.1.0", "Superseded", True, "2026-11-25T09:00:00Z", "uid-1"),
        Peer("tiny-v0", "v0.0.9", "Superseded", True, "2026-11-25T08:00:00Z", "uid-0"),
        Peer("tiny-v2", "v0.2.0", "Evaluating", True, "2026-11-25T09:10:00Z", "uid-2"),
    )
    decision = serve(new, None, peers)
    for obj in decision.apply:
        assert [ref["uid"] for ref in obj["metadata"]["ownerReferences"]] == ["uid-2", "uid-1"], obj["kind"]


# --- 4. retries: tests/unit/test_workqueue.py -------------------------------------------------------


class _SecretVersions:
    """Just the one read rotated_keys makes: a Secret's metadata, counted."""

    def __init__(self, versions):
        self.versions = versions
        self.reads = []

    def get_metadata(self, api_version, kind, namespace, name):
        self.reads.append((kind, namespace, name))
        if name == "unreachable":
            raise ConnectionError("the API server is restarting")
        version = self.versions.get((namespace, name))
        return None if version is None else {"metadata": {"resourceVersion": version}}


def test_a_rotated_key_is_found_with_one_read_per_secret_and_only_serving_releases_are_checked():
    kube = _SecretVersions({("ns", "shared-key"): "7", ("ns", "own-key"): "3"})
    reconciler = Reconciler(kube, SETTINGS)
    reconciler.keys = {
        ("ns", "a"): ("shared-key", "5"),  # rotated since its last reconcile
        ("ns", "b"): ("shared-key", "7"),
        ("ns", "c"): ("own-key", "3"),
        ("ns", "d"): ("gone-key", "1"),  # deleted by hand: a new one is generated
    }
    assert sorted(reconciler.rotated_keys([("ns", "a"), ("ns", "b"), ("ns", "c"), ("ns", "d")])) == [
        ("ns", "a"),
        ("ns", "d"),
    ]
    assert sorted(kube.reads) == [
        ("Secret", "ns", "gone-key"),
        ("Secret", "ns", "own-key"),
        ("Secret", "ns", "shared-key"),
    ]
    kube.reads.clear()
    assert reconciler.rotated_keys([("ns", "e")]) == [] and kube.reads == [], "never reconciled while serving"
    reconciler.keys[("ns", "f")] = ("unreachable", "1")
    assert reconciler.rotated_keys([("ns", "f"), ("ns", "c")]) == [], "a failed read is tried at the next resync"
    kube.reads.clear()
    reconciler.forget("ns", "a")
    assert reconciler.rotated_keys([("ns", "a")]) == [] and kube.reads == []
