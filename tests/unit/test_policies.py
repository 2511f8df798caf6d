"""The pure lifecycle decisions, without a cluster (the integration tier runs them for real)."""

from __future__ import annotations

import copy

import pytest

from tests.cases import load_example
from twlegal.api.release import LegalModelRelease
from twlegal.contracts import EvaluationResult, TrainingResult
from twlegal.contracts.evaluation import SUBJECTS_CHART_FILE, SubjectScore
from twlegal.policies import Observed, Peer, ServingView, decide
from twlegal.policies.children import job_state, rollout_state
from twlegal.render import OperatorSettings

# A key Secret named by the operator's defaults: these tests are about rollouts, not about the
# key a target gets generated when it names none (tests/unit/test_serving_security.py).
SETTINGS = OperatorSettings(default_api_key_secret="team-key/api-key")
NOW = "2026-11-25T10:00:00Z"


def release(name="tiny-v1", version="v0.1.0", status=None, uid="uid-1", **spec) -> LegalModelRelease:
    doc = copy.deepcopy(load_example())
    doc["metadata"] = {
        "name": name,
        "namespace": "ns",
        "uid": uid,
        "generation": 1,
        "creationTimestamp": "2026-11-25T09:00:00Z",
    }
    doc["spec"]["version"] = version
    doc["spec"].update(spec)
    if status:
        doc["status"] = status
    return LegalModelRelease.from_object(doc)


def job(condition=None, ready=0, failed=0, name="tiny-v1-train"):
    status = {"ready": ready, "failed": failed}
    if condition:
        status["conditions"] = [
            {
                "type": condition[0],
                "status": "True",
                "reason": condition[1],
                "message": condition[2] if len(condition) > 2 else "",
            }
        ]
    return {"metadata": {"name": name}, "status": status}


def pod(container, message):
    return {
        "metadata": {"creationTimestamp": NOW},
        "status": {
            "containerStatuses": [{"name": container, "state": {"terminated": {"exitCode": 0, "message": message}}}]
        },
    }


def trained(loss=0.4):
    return pod("trainer", TrainingResult(outcome="Succeeded", final_loss=loss, global_step=40).termination_message())


def scored(score):
    return pod("evaluator", EvaluationResult(benchmark="b", score=score, correct=1, total=2).termination_message())


def again(rel: LegalModelRelease, decision) -> LegalModelRelease:
    """The release as the API server would return it after the status write."""
    doc = rel.model_dump(by_alias=True, exclude_none=True, mode="json")
    doc["status"] = decision.status
    return LegalModelRelease.from_object(doc)


def test_a_new_release_creates_its_training_job_once():
    rel = release()
    first = decide(rel, Observed(storage_peers=()), SETTINGS, NOW)
    assert [o["kind"] for o in first.create] == ["ConfigMap", "NetworkPolicy", "Job"]
    assert first.status["phase"] == "Pending" and [e.reason for e in first.events] == ["TrainingJobCreated"]
    running = decide(again(rel, first), Observed(training_job=job(ready=1)), SETTINGS, NOW)
    assert running.create == [] and running.status["phase"] == "Training"
    settled = decide(again(rel, running), Observed(training_job=job(ready=1)), SETTINGS, "2026-11-25T11:00:00Z")
    assert settled.status == running.status and settled.events == [], "reconciling again changes nothing"


def test_a_job_between_attempts_is_still_training_not_trained():
    # Seen on a real node: the training pod was deleted, and until the Job's replacement pod runs
    # the Job has no ready, active or succeeded pod and no condition. That is not a success.
    rel = release()
    first = decide(rel, Observed(storage_peers=()), SETTINGS, NOW)
    running = decide(again(rel, first), Observed(training_job=job(ready=1)), SETTINGS, NOW)
    between = decide(again(rel, running), Observed(training_job=job()), SETTINGS, NOW)
    assert between.status["phase"] == "Training"
    assert not [o for o in between.create if o["kind"] == "Job"], "no evaluation Job before the weights exist"
    trained_condition = next(c for c in between.status["conditions"] if c["type"] == "Trained")
    assert trained_condition["status"] == "Unknown"


def test_trained_and_passing_release_asks_to_see_its_serving_target():
    obs = Observed(
        training_job=job(("Complete", "CompletionsReached")),
        training_pods=(trained(),),
        evaluation_job=job(("Complete", "CompletionsReached"), name="tiny-v1-eval"),
        evaluation_pods=(scored(80.0),),
    )
    decision = decide(release(), obs, SETTINGS, NOW)
    assert decision.needs_serving
    assert decision.status["training"]["finalLoss"] == 0.4 and decision.status["evaluation"]["passed"] is True


def test_the_first_rollout_serves_the_checksum_the_training_result_brings_in_the_same_reconcile():
    # Seen in the benchmark: the Deployment was rendered from the status read before the result
    # arrived, so every new target rolled out twice (once without --checksum, once with it).
    checksum = "sha256:" + "ab" * 32
    result = TrainingResult(
        outcome="Succeeded", final_loss=0.4, global_step=40, artifact_path="/mnt/twlegal/releases/x", checksum=checksum
    )
    obs = Observed(
        training_job=job(("Complete", "CompletionsReached")),
        training_pods=(pod("trainer", result.termination_message()),),
        evaluation_job=job(("Complete", "CompletionsReached"), name="tiny-v1-eval"),
        evaluation_pods=(scored(80.0),),
        serving=ServingView(deployment=None, peers=(), key_version="1"),
    )
    decision = decide(release(), obs, SETTINGS, NOW)
    (deployment,) = [o for o in decision.apply if o["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--checksum") + 1] == checksum and decision.status["artifact"]["checksum"] == checksum


def test_score_below_threshold_is_rejected():
    obs = Observed(
        training_job=job(("Complete", "x")),
        training_pods=(trained(),),
        evaluation_job=job(("Complete", "x")),
        evaluation_pods=(scored(10.0),),
    )
    decision = decide(release(), obs, SETTINGS, NOW)
    assert decision.status["phase"] == "Rejected" and decision.apply == [] and decision.create == []
    assert decision.events[0].type == "Warning"


def test_the_score_by_subject_is_summed_up_in_status_with_its_chart():
    result = EvaluationResult(
        benchmark="b",
        score=40.0,
        correct=4,
        total=10,
        protocol="letter",
        subjects=[
            SubjectScore(name="刑法", score=20.0, correct=1, total=5),
            SubjectScore(name="民法", score=60.0, correct=3, total=5),
        ],
        subject_count=2,
        chart=SUBJECTS_CHART_FILE,
    )
    obs = Observed(
        training_job=job(("Complete", "x")),
        training_pods=(trained(),),
        evaluation_job=job(("Complete", "x")),
        evaluation_pods=(pod("evaluator", result.termination_message()),),
    )
    evaluation = decide(release(), obs, SETTINGS, NOW).status["evaluation"]
    assert evaluation["score"] == 40.0 and evaluation["protocol"] == "letter"
    assert evaluation["subjects"] == "2 subjects; weakest: 刑法 20, 民法 60"
    assert evaluation["chart"] == SUBJECTS_CHART_FILE


def test_final_loss_above_the_guard_is_rejected_before_evaluation():
    rel = release()
    doc = rel.model_dump(by_alias=True, exclude_none=True, mode="json")
    doc["spec"]["evaluation"]["lossGuard"] = {"maxFinalLoss": 1.0}
    decision = decide(
        LegalModelRelease.from_object(doc),
        Observed(training_job=job(("Complete", "x")), training_pods=(trained(3.5),)),
        SETTINGS,
        NOW,
    )
    assert decision.status["phase"] == "Rejected" and "maxFinalLoss" in decision.events[0].message


def test_diverged_training_is_rejected_not_failed():
    diverged = pod("trainer", TrainingResult(outcome="Diverged", message="nan at step 3").termination_message())
    decision = decide(
        release(), Observed(training_job=job(("Failed", "PodFailurePolicy")), training_pods=(diverged,)), SETTINGS, NOW
    )
    assert decision.status["phase"] == "Rejected"
    assert decision.status["conditions"][0]["reason"] == "LossDiverged"


def test_a_failed_job_keeps_the_trainers_words():
    crash = pod("trainer", "Traceback\nValueError: bad column")
    decision = decide(
        release(),
        Observed(training_job=job(("Failed", "PodFailurePolicy", "exit code 1")), training_pods=(crash,)),
        SETTINGS,
        NOW,
    )
    assert decision.status["phase"] == "Failed"
    assert "ValueError: bad column" in decision.status["conditions"][0]["message"]


def _passed(rel):
    return Observed(
        training_job=job(("Complete", "x")),
        training_pods=(trained(),),
        evaluation_job=job(("Complete", "x")),
        evaluation_pods=(scored(80.0),),
    )


def deployment(pinned, previous="", ready=True, deadline=False):
    conds = [{"type": "Progressing", "reason": "ProgressDeadlineExceeded" if deadline else "NewReplicaSetAvailable"}]
    n = 1 if ready else 0
    return {
        "metadata": {"generation": 2, "annotations": {"twlegal.io/previous-release": previous}},
        "spec": {"replicas": 1, "template": {"metadata": {"labels": {"twlegal.io/release": pinned}}}},
        "status": {
            "observedGeneration": 2,
            "replicas": 1 if ready else 2,
            "updatedReplicas": 1,
            "availableReplicas": n,
            "readyReplicas": n,
            "conditions": conds,
        },
    }


def test_the_newest_passing_release_pins_the_target_and_remembers_the_previous():
    old = release("tiny-v1", "v0.1.0", uid="uid-old")
    new = release("tiny-v2", "v0.2.0", uid="uid-new")
    view = ServingView(
        deployment(pinned="tiny-v1"),
        (Peer("tiny-v1", "v0.1.0", "Serving", True), Peer("tiny-v2", "v0.2.0", "Evaluating", True)),
        previous=old,
    )
    decision = decide(new, Observed(**{**_passed(new).__dict__, "serving": view}), SETTINGS, NOW)
    assert decision.status["phase"] == "RollingOut"
    deploy = next(o for o in decision.apply if o["kind"] == "Deployment")
    assert deploy["spec"]["template"]["metadata"]["labels"]["twlegal.io/release"] == "tiny-v2"
    assert deploy["metadata"]["annotations"]["twlegal.io/previous-release"] == "tiny-v1"
    assert [(o["uid"], o["controller"]) for o in deploy["metadata"]["ownerReferences"]] == [
        ("uid-new", True),
        ("uid-old", False),
    ]
    assert decision.status["serving"]["previousRevision"] == "v0.1.0"


def test_version_order_is_numeric_not_lexical():
    older = release("r-9", "v2024.11.6")
    view = ServingView(None, (Peer("r-9", "v2024.11.6", None, True), Peer("r-13", "v2024.11.13", "Serving", True)))
    decision = decide(older, Observed(**{**_passed(older).__dict__, "serving": view}), SETTINGS, NOW)
    assert decision.status["phase"] == "Superseded" and decision.apply == []
    assert decision.status["serving"]["supersededBy"] == "r-13"


def test_the_serving_release_keeps_serving_until_the_newer_one_is_ready():
    old = release("tiny-v1", "v0.1.0", status={"phase": "Serving"})
    peers = (Peer("tiny-v1", "v0.1.0", "Serving", True), Peer("tiny-v2", "v0.2.0", "RollingOut", True))
    decision = decide(
        old, Observed(**{**_passed(old).__dict__, "serving": ServingView(deployment("tiny-v1"), peers)}), SETTINGS, NOW
    )
    assert decision.status["phase"] == "Serving" and decision.events == []
    peers = (peers[0], Peer("tiny-v2", "v0.2.0", "Serving", True))
    decision = decide(
        old, Observed(**{**_passed(old).__dict__, "serving": ServingView(deployment("tiny-v2"), peers)}), SETTINGS, NOW
    )
    assert decision.status["phase"] == "Superseded"


def test_a_rollout_past_its_deadline_rolls_back_to_the_previous_release():
    old = release("tiny-v1", "v0.1.0", uid="uid-old")
    new = release("tiny-v2", "v0.2.0", uid="uid-new", status={"phase": "RollingOut"})
    view = ServingView(
        deployment("tiny-v2", previous="tiny-v1", ready=False, deadline=True),
        (Peer("tiny-v1", "v0.1.0", "Serving", True), Peer("tiny-v2", "v0.2.0", "RollingOut", True)),
        previous=old,
    )
    decision = decide(new, Observed(**{**_passed(new).__dict__, "serving": view}), SETTINGS, NOW)
    assert decision.status["phase"] == "RolledBack"
    restored = next(o for o in decision.apply if o["kind"] == "Deployment")
    assert restored["spec"]["template"]["metadata"]["labels"]["twlegal.io/release"] == "tiny-v1"


@pytest.mark.parametrize("phase", ["Failed", "Rejected", "RolledBack"])
def test_terminal_releases_do_nothing(phase):
    decision = decide(release(status={"phase": phase}), Observed(), SETTINGS, NOW)
    assert decision.create == decision.apply == decision.events == [] and decision.status["phase"] == phase


def test_job_and_rollout_states():
    assert job_state(job()).state == "pending"
    assert job_state(job(ready=1)).state == "running"
    assert job_state(job(("Complete", "x"))).state == "succeeded"
    assert job_state(job(("Failed", "BackoffLimitExceeded"))).reason == "BackoffLimitExceeded"
    assert rollout_state(deployment("a")).state == "complete"
    assert rollout_state(deployment("a", ready=False)).state == "progressing"
    assert rollout_state(deployment("a", ready=False, deadline=True)).state == "failed"
    stale = deployment("a")
    stale["status"]["observedGeneration"] = 1
    assert rollout_state(stale).state == "progressing"


def test_a_stale_view_never_takes_the_target_back_from_a_newer_pinned_release():
    old = release("tiny-v1", "v0.1.0", status={"phase": "Serving"})
    # The newer release already pinned the target, but the view of its status still says Evaluating.
    peers = (Peer("tiny-v1", "v0.1.0", "Serving", True), Peer("tiny-v2", "v0.2.0", "Evaluating", False))
    view = ServingView(deployment("tiny-v2", previous="tiny-v1", ready=False), peers)
    decision = decide(old, Observed(**{**_passed(old).__dict__, "serving": view}), SETTINGS, NOW)
    assert decision.apply == [] and decision.status["phase"] == "Serving"


def test_a_deadline_left_by_someone_elses_rollout_does_not_roll_back_the_restored_release():
    old = release("tiny-v1", "v0.1.0", status={"phase": "Serving"})
    peers = (Peer("tiny-v1", "v0.1.0", "Serving", True), Peer("tiny-v2", "v0.2.0", "RolledBack", True))
    view = ServingView(deployment("tiny-v1", ready=False, deadline=True), peers)
    decision = decide(old, Observed(**{**_passed(old).__dict__, "serving": view}), SETTINGS, NOW)
    assert decision.status["phase"] == "Serving", "it serves on while its own template comes back"
    deployed = next(c for c in decision.status["conditions"] if c["type"] == "Deployed")
    assert deployed["reason"] == "Updating" and [e.reason for e in decision.events] == ["UpdateStarted"]
    pinned = next(o for o in decision.apply if o["kind"] == "Deployment")
    assert pinned["spec"]["template"]["metadata"]["labels"]["twlegal.io/release"] == "tiny-v1"


def test_a_hub_dataset_without_a_revision_is_flagged_once_as_a_condition_and_an_event():
    rel = release(
        hub={"offline": False},
        datasets=[{"name": "lianghsun/tw-legal-nlp"}, {"name": "lianghsun/tw-judgment-qa", "revision": "v1"}],
    )
    first = decide(rel, Observed(storage_peers=()), SETTINGS, NOW)
    pinned = next(c for c in first.status["conditions"] if c["type"] == "InputsPinned")
    assert (pinned["status"], pinned["reason"]) == ("False", "UnpinnedDataset")
    assert "1 of 2 datasets have no revision (lianghsun/tw-legal-nlp)" in pinned["message"]
    assert [(e.type, e.reason) for e in first.events] == [
        ("Warning", "UnpinnedDataset"),
        ("Normal", "TrainingJobCreated"),
    ]
    assert first.status["conditions"][0]["type"] == "Trained", "the stage conditions come first"
    later = decide(again(rel, first), Observed(training_job=job(ready=1)), SETTINGS, NOW)
    assert "UnpinnedDataset" not in [e.reason for e in later.events]


def test_pinned_inputs_say_so():
    decision = decide(release(), Observed(storage_peers=()), SETTINGS, NOW)
    pinned = next(c for c in decision.status["conditions"] if c["type"] == "InputsPinned")
    assert (pinned["status"], pinned["reason"]) == ("True", "Pinned")


def test_the_trainers_resolved_inputs_and_run_figures_land_in_status():
    result = TrainingResult(
        outcome="Succeeded",
        final_loss=0.4,
        global_step=40,
        total_steps=40,
        epochs=2.0,
        samples=160,
        world_size=2,
        inputs={
            "baseModel": {"name": "org/base", "revision": "v1", "commit": "a" * 40},
            "datasets": [{"path": "/mnt/twlegal/datasets/a.jsonl", "checksum": "sha256:" + "b" * 64}],
        },
    )
    obs = Observed(training_job=job(("Complete", "x")), training_pods=(pod("trainer", result.termination_message()),))
    status = decide(release(), obs, SETTINGS, NOW).status
    assert status["inputs"]["baseModel"]["commit"] == "a" * 40
    assert status["inputs"]["datasets"][0]["checksum"].startswith("sha256:")
    assert {k: status["training"][k] for k in ("samples", "worldSize", "epochs")} == {
        "samples": 160,
        "worldSize": 2,
        "epochs": 2.0,
    }


def test_a_superseded_release_records_when_it_stopped_serving():
    old = release("tiny-v1", "v0.1.0", status={"phase": "Serving", "serving": {"servingSince": "2026-11-24T10:00:00Z"}})
    peers = (Peer("tiny-v1", "v0.1.0", "Serving", True), Peer("tiny-v2", "v0.2.0", "Serving", True))
    decision = decide(
        old, Observed(**{**_passed(old).__dict__, "serving": ServingView(deployment("tiny-v2"), peers)}), SETTINGS, NOW
    )
    assert decision.status["serving"] == {**decision.status["serving"], "supersededBy": "tiny-v2", "servedUntil": NOW}


def test_the_result_keeps_within_the_termination_message_limit_by_dropping_dataset_provenance_last():
    datasets = [{"name": f"org/dataset-{i:03d}", "revision": "main", "commit": f"{i:040x}"} for i in range(64)]
    result = TrainingResult(outcome="Succeeded", warnings=["w" * 100] * 5, inputs={"datasets": datasets})
    text = result.termination_message()
    assert len(text.encode()) <= 4096
    assert "datasets" not in TrainingResult.model_validate_json(text).inputs.to_wire()
