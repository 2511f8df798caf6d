"""Storage decisions without a cluster: placements, conflicts, retention and reclaim (the
integration tier runs them against the real control plane)."""

from __future__ import annotations

import copy
import json

import pytest

from tests.unit.test_policies import NOW, SETTINGS, again, job, pod, release
from twlegal.api.release import LegalModelRelease
from twlegal.contracts.storage import StorageResult, StorageTask, inputs_digest
from twlegal.contracts.training import TrainingResult
from twlegal.policies import Observed, ServingView, StoragePeer, decide
from twlegal.policies.storage import RECLAIM_FINALIZER, overlapping
from twlegal.render import OperatorSettings
from twlegal.render import storage as render_storage


def with_storage(rel: LegalModelRelease, **storage) -> LegalModelRelease:
    doc = rel.model_dump(by_alias=True, exclude_none=True, mode="json")
    doc["spec"]["storage"] = {**doc["spec"]["storage"], **storage}
    return LegalModelRelease.from_object(doc)


def with_meta(rel: LegalModelRelease, **meta) -> LegalModelRelease:
    doc = rel.model_dump(by_alias=True, exclude_none=True, mode="json")
    doc["metadata"].update(meta)
    return LegalModelRelease.from_object(doc)


def peer(rel: LegalModelRelease, settings=SETTINGS) -> StoragePeer:
    return StoragePeer.of(rel, settings)


def test_overlap_is_by_path_component():
    assert overlapping("releases/a", "releases/a")
    assert overlapping("releases/a", "releases/a/ckpt")
    assert overlapping("releases/a/ckpt", "releases/a")
    assert not overlapping("releases/a", "releases/ab")
    assert not overlapping("releases/a/x", "releases/b/x")


def test_default_paths_of_two_releases_never_overlap():
    # Same model and version under two names; the same name re-created with another learning rate.
    first = release("tiny-v1")
    retry = release("tiny-v1-retry")
    doc = first.model_dump(by_alias=True, exclude_none=True, mode="json")
    doc["spec"]["training"]["hyperparameters"]["learningRate"] = 1e-5
    doc["metadata"]["uid"] = "uid-2"
    recreated = LegalModelRelease.from_object(doc)
    placements = [render_storage.placement(r, SETTINGS) for r in (first, retry, recreated)]
    paths = [p for placement in placements for p in placement.paths()]
    for i, a in enumerate(paths):
        for b in paths[i + 1 :]:
            assert not overlapping(a, b), (a, b)
    # ...while the same file applied again (same name, same inputs) finds its own directories.
    assert inputs_digest(first.spec) != inputs_digest(recreated.spec)
    same = with_meta(first, uid="uid-3")
    assert render_storage.placement(same, SETTINGS) == placements[0]


def test_uid_token_and_normalised_paths():
    rel = with_storage(release(uid="0b0e3c9e"), artifactPath="./weights/{uid}/", checkpointPath="ckpt/{uid}")
    placement = render_storage.placement(rel, SETTINGS)
    assert placement.paths() == ("ckpt/0b0e3c9e", "weights/0b0e3c9e")


def test_a_second_release_on_the_same_directories_is_refused_and_nothing_is_created():
    shared = {"artifactPath": "releases/{model}/{name}", "checkpointPath": "checkpoints/shared/{name}"}
    first = with_storage(release("tiny-v1"), **shared)
    started = decide(first, Observed(storage_peers=()), SETTINGS, NOW)
    first = again(first, started)
    assert first.status and first.status.storage and first.status.storage.checkpoint_path

    # Another release whose template leads into the first one's checkpoints.
    second = with_storage(
        release("tiny-v2", version="v0.2.0", uid="uid-2"),
        artifactPath="releases/{name}",
        checkpointPath="checkpoints/shared/tiny-v1/{name}",
    )
    decision = decide(second, Observed(storage_peers=(peer(first), peer(second))), SETTINGS, NOW)
    assert decision.create == []
    trained = {c["type"]: c for c in decision.status["conditions"]}["Trained"]
    assert (trained["status"], trained["reason"]) == ("False", "StorageConflict")
    assert "release tiny-v1" in trained["message"] and "checkpoints/shared/tiny-v1" in trained["message"]
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "StorageConflict")]
    assert decision.status["phase"] == "Pending"
    # Reconciling again does not repeat the event; fixing spec.storage lets it start.
    assert decide(again(second, decision), Observed(storage_peers=(peer(first),)), SETTINGS, NOW).events == []
    fixed = with_storage(again(second, decision), checkpointPath="checkpoints/{name}")
    started = decide(fixed, Observed(storage_peers=(peer(first),)), SETTINGS, NOW)
    assert [o["kind"] for o in started.create] == ["ConfigMap", "NetworkPolicy", "Job"]


def test_of_two_new_releases_on_one_directory_the_older_starts():
    paths = {"artifactPath": "w/{model}/{uid}", "checkpointPath": "c/{model}/{uid}"}
    # {uid} is unique, so make them collide through the literal part of a second template.
    older = with_storage(release("a", uid="u1"), **paths)
    younger_doc = copy.deepcopy(older.model_dump(by_alias=True, exclude_none=True, mode="json"))
    younger_doc["metadata"].update(name="b", uid="u2", creationTimestamp="2026-11-25T09:30:00Z")
    younger_doc["spec"]["storage"]["checkpointPath"] = "c/{model}/u1/{name}"
    younger = LegalModelRelease.from_object(younger_doc)
    peers = (peer(older), peer(younger))
    assert decide(older, Observed(storage_peers=peers), SETTINGS, NOW).create
    refused = decide(younger, Observed(storage_peers=peers), SETTINGS, NOW)
    trained = {c["type"]: c for c in refused.status["conditions"]}["Trained"]
    assert refused.create == [] and trained["reason"] == "StorageConflict" and "release a" in trained["message"]


def test_no_claim_and_no_default_is_refused_naming_the_field():
    doc = release().model_dump(by_alias=True, exclude_none=True, mode="json")
    doc["spec"]["storage"].pop("pvc")
    rel = LegalModelRelease.from_object(doc)
    decision = decide(rel, Observed(storage_peers=()), SETTINGS, NOW)
    trained = {c["type"]: c for c in decision.status["conditions"]}["Trained"]
    assert trained["reason"] == "StorageUnset" and "spec.storage.pvc" in trained["message"]
    assert decision.create == []
    # With the operator's default claim it starts on that claim, and status pins it.
    settings = OperatorSettings(default_api_key_secret="team-key/api-key", default_storage_claim="team-models")
    started = decide(rel, Observed(storage_peers=()), settings, NOW)
    job_obj = next(o for o in started.create if o["kind"] == "Job")
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in job_obj["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["team-models"]
    assert started.status["storage"]["claimName"] == "team-models"
    # A later change of the default never moves it.
    moved = OperatorSettings(default_storage_claim="other")
    assert render_storage.placement(again(rel, started), moved).claim == "team-models"


def _trained(rel: LegalModelRelease, result: TrainingResult, condition=("Complete", "x")) -> LegalModelRelease:
    started = again(rel, decide(rel, Observed(storage_peers=()), SETTINGS, NOW))
    done = decide(
        started,
        Observed(training_job=job(condition), training_pods=(pod("trainer", result.termination_message()),)),
        SETTINGS,
        NOW,
    )
    return again(started, done)


def test_retention_prunes_once_after_success_and_keeps_one_after_a_failure():
    ok = _trained(release(), TrainingResult(outcome="Succeeded", final_loss=0.4, global_step=4))
    decision = decide(ok, Observed(), SETTINGS, NOW)
    prune = next(o for o in decision.create if o["metadata"]["name"] == "tiny-v1-prune")
    args = prune["spec"]["template"]["spec"]["containers"][0]["args"]
    task = StorageTask.model_validate_json(args[args.index("--task") + 1])
    assert (task.action, task.keep_checkpoints) == ("prune", 0)
    assert task.checkpoint_dir == "/mnt/twlegal/" + ok.status.storage.checkpoint_path
    assert task.owner.inputs == inputs_digest(ok.spec)
    assert prune["spec"]["template"]["spec"]["automountServiceAccountToken"] is False

    report = StorageResult(removed=["/mnt/twlegal/c/checkpoint-2"], freed_bytes=2048).to_wire()
    done_job = {**job(("Complete", "x"), name="tiny-v1-prune")}
    finished = decide(
        again(ok, decision),
        Observed(storage_job=done_job, storage_pods=(pod("storage", json.dumps(report)),)),
        SETTINGS,
        NOW,
    )
    assert finished.status["storage"]["checkpointsPruned"] is True
    assert "2048 bytes" in finished.status["storage"]["message"]
    assert [e.reason for e in finished.events] == ["CheckpointsPruned"]
    later = decide(again(ok, finished), Observed(), SETTINGS, NOW)
    assert "tiny-v1-prune" not in [o["metadata"]["name"] for o in later.create], "pruned once"

    failed = _trained(
        release(),
        TrainingResult(outcome="Diverged", message="loss became nan at step 3"),
        condition=("Failed", "PodFailurePolicy"),
    )
    assert failed.status.phase == "Rejected"
    decision = decide(failed, Observed(), SETTINGS, NOW)
    prune = next(o for o in decision.create if o["metadata"]["name"] == "tiny-v1-prune")
    args = prune["spec"]["template"]["spec"]["containers"][0]["args"]
    assert StorageTask.model_validate_json(args[-1]).keep_checkpoints == 1


@pytest.mark.parametrize("outcome,reason", [("StorageFull", "StorageFull"), ("StorageConflict", "StorageConflict")])
def test_storage_outcomes_of_the_trainer_name_their_reason(outcome, reason):
    message = "no space left on /mnt/twlegal/c: the save needed about 40.0 GB, 1.2 GB were free"
    failed = _trained(
        release(), TrainingResult(outcome=outcome, message=message), condition=("Failed", "PodFailurePolicy")
    )
    trained = {c.type: c for c in failed.status.conditions}["Trained"]
    assert trained.reason == reason and message in trained.message
    assert failed.status.phase == "Failed"


def test_reclaim_policy_delete_adds_a_finalizer_and_retain_removes_it():
    rel = with_storage(release(), reclaimPolicy="Delete")
    assert decide(rel, Observed(storage_peers=()), SETTINGS, NOW).finalizers == [RECLAIM_FINALIZER]
    held = with_meta(rel, finalizers=["other.io/x", RECLAIM_FINALIZER])
    assert decide(held, Observed(storage_peers=()), SETTINGS, NOW).finalizers is None
    retained = with_storage(held, reclaimPolicy="Retain")
    assert decide(retained, Observed(storage_peers=()), SETTINGS, NOW).finalizers == ["other.io/x"]


def _deployment(pinned: str):
    return {"spec": {"template": {"metadata": {"labels": {"twlegal.io/release": pinned}}}}}


def test_deleting_with_delete_stops_jobs_then_reclaims_then_lets_go():
    ok = _trained(with_storage(release(), reclaimPolicy="Delete"), TrainingResult(outcome="Succeeded", global_step=4))
    deleting = with_meta(ok, finalizers=[RECLAIM_FINALIZER], deletionTimestamp=NOW)
    # An evaluation still running is stopped first; nothing is removed while it runs.
    running = job(name="tiny-v1-eval", ready=1)
    first = decide(deleting, Observed(evaluation_job=running), SETTINGS, NOW)
    assert first.delete == [running] and first.create == [] and first.finalizers is None

    # Then the reclaim Job; the weights go too when another release serves the target.
    view = ServingView(deployment=_deployment("tiny-v2"), peers=())
    second = decide(deleting, Observed(serving=view), SETTINGS, NOW)
    reclaim = next(o for o in second.create if o["metadata"]["name"] == "tiny-v1-reclaim")
    args = reclaim["spec"]["template"]["spec"]["containers"][0]["args"]
    task = StorageTask.model_validate_json(args[-1])
    assert task.action == "reclaim" and task.artifact_dir == "/mnt/twlegal/" + ok.status.storage.artifact_path
    assert second.finalizers is None

    done = decide(
        again(deleting, second),
        Observed(serving=view, storage_job=job(("Complete", "x"), name="tiny-v1-reclaim")),
        SETTINGS,
        NOW,
    )
    assert done.finalizers == [] and [e.reason for e in done.events] == ["StorageReclaimed"]


def test_deleting_the_release_a_target_serves_keeps_its_weights():
    ok = _trained(with_storage(release(), reclaimPolicy="Delete"), TrainingResult(outcome="Succeeded", global_step=4))
    deleting = with_meta(ok, finalizers=[RECLAIM_FINALIZER], deletionTimestamp=NOW)
    view = ServingView(deployment=_deployment("tiny-v1"), peers=())
    decision = decide(deleting, Observed(serving=view), SETTINGS, NOW)
    reclaim = next(o for o in decision.create if o["metadata"]["name"] == "tiny-v1-reclaim")
    task = StorageTask.model_validate_json(reclaim["spec"]["template"]["spec"]["containers"][0]["args"][-1])
    assert task.artifact_dir is None, "the weights a target serves are never removed"
    assert "WeightsKept" in [e.reason for e in decision.events]


def test_a_failed_reclaim_keeps_the_finalizer_and_says_how_to_let_go():
    ok = _trained(with_storage(release(), reclaimPolicy="Delete"), TrainingResult(outcome="Succeeded", global_step=4))
    deleting = with_meta(ok, finalizers=[RECLAIM_FINALIZER], deletionTimestamp=NOW)
    view = ServingView(deployment=None, peers=())
    failed = decide(
        deleting,
        Observed(serving=view, storage_job=job(("Failed", "BackoffLimitExceeded"), name="tiny-v1-reclaim")),
        SETTINGS,
        NOW,
    )
    assert failed.finalizers is None
    assert RECLAIM_FINALIZER in failed.status["storage"]["message"]
    assert [e.reason for e in failed.events] == ["ReclaimFailed"]


def test_deleting_a_release_that_never_trained_lets_go_at_once():
    rel = with_meta(
        with_storage(release(), reclaimPolicy="Delete"), finalizers=[RECLAIM_FINALIZER], deletionTimestamp=NOW
    )
    decision = decide(rel, Observed(), SETTINGS, NOW)
    assert decision.finalizers == [] and decision.create == []


def test_serving_pins_the_checksum_recorded_at_publish():
    ok = _trained(
        release(), TrainingResult(outcome="Succeeded", global_step=4, checksum="sha256:" + "c" * 64, artifact_path="/x")
    )
    from twlegal.render import serving as render_serving

    launch = render_serving.launch(ok, SETTINGS)
    assert launch.checksum == "sha256:" + "c" * 64
    assert launch.to_argv()[launch.to_argv().index("--checksum") + 1] == launch.checksum
