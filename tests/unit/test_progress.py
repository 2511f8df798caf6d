"""Live progress (issue 18): the contract both sides share, what decide() makes of it, the pods and
NetworkPolicies that carry it, and what `twlegal watch` shows of a release."""

from __future__ import annotations

import io
import json

from tests.unit.test_policies import NOW, SETTINGS, again, job, release
from twlegal.cli import watch as watch_cli
from twlegal.contracts.progress import PORT, Progress, human_duration
from twlegal.docs.watch import outcome, snapshot
from twlegal.policies import Observed, decide
from twlegal.render import evaluation, training
from twlegal.render.settings import OperatorSettings

LATER = "2026-11-25T10:00:30Z"


def test_progress_goes_through_metrics_and_back_unchanged():
    sent = Progress(
        stage="training",
        step=42,
        total=100,
        epoch=1.26,
        loss=1.5,
        learning_rate=2e-5,
        tokens_per_second=900.0,
        eta_seconds=245.4,
        resumed_from_step=20,
        checkpoint_step=40,
    )
    assert Progress.from_samples(sent.samples()) == sent
    assert "twlegal_training_gpu_memory_bytes" not in sent.samples(), "unknown figures are not exported as 0"
    assert Progress.from_samples({"process_cpu_seconds_total": 3.0}) is None, "not a stage's metrics"
    status = sent.status(NOW)
    assert status["summary"] == "42% (42/100)" and status["eta"] == "4m05s" and status["etaSeconds"] == 245
    assert Progress(stage="training").status(NOW)["summary"] == "starting"
    evaluating = Progress(stage="evaluation", step=3, total=12)
    assert Progress.from_samples(evaluating.samples()) == evaluating
    assert [human_duration(s) for s in (9, 65, 3725, 90000)] == ["9s", "1m05s", "1h02m", "1d01h"]


def _training(progress=None, old=None):
    """A release that trains already, its status holding `old` progress, decided with `progress` read."""
    rel = release()
    pending = again(rel, decide(rel, Observed(storage_peers=()), SETTINGS, NOW))
    running = again(pending, decide(pending, Observed(training_job=job(ready=1)), SETTINGS, NOW))
    if old is not None:
        doc = running.model_dump(by_alias=True, exclude_none=True, mode="json")
        doc["status"]["progress"] = old
        running = type(running).from_object(doc)
    return running, decide(running, Observed(training_job=job(ready=1), progress=progress), SETTINGS, LATER)


def test_a_training_release_shows_its_progress_and_tells_its_milestones_once():
    _rel, decision = _training(Progress(stage="training", step=5, total=40, loss=2.5, eta_seconds=70))
    assert decision.status["phase"] == "Training"
    assert decision.status["progress"]["summary"] == "12% (5/40)" and decision.status["progress"]["updated"] == LATER
    assert "CheckpointSaved" not in [e.reason for e in decision.events]
    saved = Progress(stage="training", step=12, total=40, checkpoint_step=10)
    _, first = _training(saved, old=decision.status["progress"])
    assert [e.reason for e in first.events] == ["CheckpointSaved"]
    assert "step 10" in first.events[0].message
    _, later = _training(saved.model_copy(update={"step": 22, "checkpoint_step": 20}), old=first.status["progress"])
    assert later.events == [], "the first checkpoint only, once"


def test_a_resumed_attempt_is_told_and_its_checkpoint_is_not_the_first():
    resumed = Progress(stage="training", step=21, total=40, resumed_from_step=20, checkpoint_step=20)
    _, decision = _training(resumed, old={"stage": "training", "step": 23, "checkpointStep": 20})
    assert [e.reason for e in decision.events] == ["Resumed"]
    assert "step 20" in decision.events[0].message
    _, again_ = _training(resumed, old=decision.status["progress"])
    assert again_.events == []
    # Stopped within a progress interval of its first checkpoint, the run was never seen with it:
    # the resumed attempt's first report tells both.
    _, unseen = _training(resumed, old={"stage": "training", "step": 19})
    assert [e.reason for e in unseen.events] == ["CheckpointSaved", "Resumed"]
    assert "checkpoint at step 20 is complete" in unseen.events[0].message


def test_progress_that_cannot_be_read_now_keeps_the_last_and_leaves_with_the_stage():
    last = {"stage": "training", "summary": "50% (20/40)", "step": 20, "total": 40, "updated": NOW}
    _, unreadable = _training(None, old=last)
    assert unreadable.status["progress"] == last
    rel = release(status={"phase": "Training", "progress": last, "conditions": []})
    done = decide(rel, Observed(training_job=job(("Complete", "Completed"))), SETTINGS, LATER)
    assert "progress" not in done.status, "a stage that ended reports nothing"


def test_stage_pods_serve_progress_that_only_the_operator_and_monitoring_may_read():
    settings = OperatorSettings(operator_namespace="twlegal-system", monitoring_namespace="monitoring")
    rel = release()
    for objects in (training.render(rel, settings), evaluation.render(rel, settings)):
        by_kind = {o["kind"]: o for o in objects}
        template = by_kind["Job"]["spec"]["template"]
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(PORT)
        assert template["spec"]["containers"][0]["ports"] == [
            {"name": "metrics", "containerPort": PORT, "protocol": "TCP"}
        ]
        (rule,) = by_kind["NetworkPolicy"]["spec"]["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": PORT}]
        readers = [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in rule["from"]]
        assert readers == ["twlegal-system", "monitoring"]
    closed = {o["kind"]: o for o in training.render(rel, OperatorSettings())}["NetworkPolicy"]
    assert closed["spec"]["ingress"] == [], "no operator namespace known: nobody may connect"


def _obj(phase=None, **status):
    return {"metadata": {"name": "r"}, "status": {"phase": phase, **status} if phase else status}


def test_watch_shows_the_phases_and_ends_with_the_outcome():
    queued = snapshot(_obj())
    assert queued.phase == "Queued" and outcome(queued) is None
    training_ = snapshot(
        _obj("Training", progress={"percent": 50, "step": 20, "total": 40, "loss": 1.25, "eta": "10s"})
    )
    assert training_.line() == "Training: training, 50% (20/40), loss 1.25, ETA 10s"
    ready = {"type": "Ready", "status": "True", "reason": "Serving", "message": "tiny-legal serves v0.1.0"}
    serving = snapshot(
        _obj("Serving", conditions=[ready], serving={"revision": "v0.1.0", "endpoint": "http://x:8000/v1"})
    )
    assert outcome(serving) == 0 and serving.serving == "http://x:8000/v1"
    rejected = {"type": "Ready", "status": "False", "reason": "Rejected", "message": "score 20 is below minScore 30"}
    assert outcome(snapshot(_obj("Rejected", conditions=[rejected]))) == 1


def test_watch_without_a_terminal_prints_plain_lines_and_json_lines():
    states = iter(
        [
            _obj(),
            _obj("Training", progress={"percent": 10, "step": 4, "total": 40}),
            _obj("Training", progress={"percent": 10, "step": 4, "total": 40}),
            _obj("Serving"),
        ]
    )
    snaps = watch_cli.follow(lambda: next(states), interval=0, timeout=10)
    out = io.StringIO()
    last = watch_cli._plain(snaps, out, as_json=False)
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["Queued", "Training", "Serving"], "a line per change only"
    assert "\x1b" not in out.getvalue() and last.phase == "Serving"
    out = io.StringIO()
    watch_cli._plain(watch_cli.follow(iter([_obj("Failed")]).__next__, interval=0, timeout=10), out, as_json=True)
    assert json.loads(out.getvalue())["phase"] == "Failed"
    gone = io.StringIO()
    assert watch_cli._plain(watch_cli.follow(lambda: None, interval=0, timeout=10), gone, as_json=False) is None
