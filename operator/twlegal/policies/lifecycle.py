"""The lifecycle of a release, decided from what is observed (pure: no client, no kopf).

    Pending -> Training -> Evaluating -> RollingOut -> Serving -> Superseded
       Failed (training/evaluation error), Rejected (score or loss), RolledBack (pods never ready)

`decide()` is level-based: given the release and its children as they are now, it returns the
whole desired status, the objects to create or apply, and the events of the transition. Calling it
again with the same inputs gives the same answer, so a restart or a missed event changes nothing.

Around the stages, the release's directories: no training Job before its placement is free
(policies/storage.py), checkpoints pruned once training settles and everything reclaimed on
deletion with reclaimPolicy Delete (policies/retention.py).
"""

from __future__ import annotations

from typing import Any

from ..api import reasons as R
from ..api.release import LegalModelRelease
from ..api.status import TERMINAL_PHASES, Phase
from ..contracts.evaluation import EvaluationResult
from ..contracts.training import TrainingResult
from ..render import evaluation as render_evaluation
from ..render import names
from ..render import storage as render_storage
from ..render import training as render_training
from ..render.settings import OperatorSettings
from . import children, consistency, retention, storage
from . import conditions as cond
from .conditions import DEPLOYED, EVALUATED, INPUTS_PINNED, READY, TRAINED
from .plan import Decision, Event, Observed, Plan
from .serving import serving


def settled_stages(release: LegalModelRelease) -> tuple[bool, bool]:
    """(training settled, evaluation settled): stages whose outcome status already records, so
    their Jobs and pods need not be read again (decide() continues from status)."""
    status = release.status.to_wire() if release.status else {}
    conds = status.get("conditions") or []
    trained = cond.is_true(conds, TRAINED)
    evaluated = release.spec.evaluation is None or (
        cond.get(conds, EVALUATED) is not None and "score" in (status.get("evaluation") or {})
    )
    return trained, trained and evaluated


def decide(release: LegalModelRelease, observed: Observed, settings: OperatorSettings, now: str) -> Decision:
    plan = Plan(release, now)
    plan.status.pop("progress", None)  # only a stage that is running reports it (_progress)
    if storage.is_deleting(release):
        return retention.reclaim(plan, observed, settings)
    retention.finalizer(plan)
    _inputs(plan)
    if observed.stale_children:
        return _stale_children(plan, observed.stale_children)
    retention.retention(plan, observed, settings)
    if plan.old.get("phase") in TERMINAL_PHASES:
        return plan.decision  # a failed, rejected or rolled-back release stays so; nothing more to do
    done = _training(plan, observed, settings)
    if done is not None:
        return done
    done = _evaluation(plan, observed, settings)
    if done is not None:
        return done
    if not release.spec.serving.enabled:
        plan.condition(DEPLOYED, "False", R.SERVING_DISABLED, "spec.serving.enabled is false")
        plan.condition(READY, "True", R.TRAINED_ONLY, "trained and evaluated; serving is disabled")
        return plan.phase(Phase.COMPLETED, R.COMPLETED, "release trained and passed; serving is disabled")
    if observed.serving is None:
        plan.decision.needs_serving = True
        return plan.decision
    return serving(plan, observed.serving, settings)


# --- inputs -----------------------------------------------------------------------------------


def _inputs(plan: Plan) -> None:
    """InputsPinned: whether every input names exactly what it trains on. Unpinned data is allowed
    (many hub datasets have no tags) but said loudly, once as an event and for good in status."""
    findings = consistency.unpinned_datasets(plan.release.spec)
    was_false = cond.is_false(plan.old.get("conditions") or [], INPUTS_PINNED)
    if findings:
        plan.condition(INPUTS_PINNED, "False", findings[0].reason, findings[0].message)
        if not was_false:
            plan.decision.events.append(Event("Warning", findings[0].reason, findings[0].message))
    else:
        plan.condition(INPUTS_PINNED, "True", R.PINNED, "the base model and every hub dataset name a revision")


def _stale_children(plan: Plan, stale: tuple[str, ...]) -> Decision:
    """Objects under this release's names that belong to an earlier release of the same name (or are
    being deleted): never read as this release's, never reused; wait until they are gone."""
    message = (
        f"waiting for {', '.join(stale)} to be deleted: it belongs to an earlier release named "
        f"{plan.release.name} (garbage collection removes it); nothing is created until it is gone"
    )
    old = cond.get(plan.old.get("conditions") or [], READY)
    if old is None or old.get("reason") != R.STALE_CHILDREN:
        plan.decision.events.append(Event("Normal", R.STALE_CHILDREN, message))
    plan.condition(READY, "False", R.STALE_CHILDREN, message)
    plan.status["phase"] = plan.old.get("phase") or Phase.PENDING.value
    return plan.decision


# --- training ---------------------------------------------------------------------------------


def _training(plan: Plan, observed: Observed, settings: OperatorSettings) -> Decision | None:
    release = plan.release
    job_name = names.training_job_name(release)
    job = observed.training_job
    if job is None:
        if cond.is_true(plan.status["conditions"], TRAINED):
            return None  # trained earlier; the Job was cleaned up since
        if observed.storage_peers is None:
            plan.decision.needs_storage_peers = True
            return plan.decision
        problem = storage.placement_problem(release, settings, observed.storage_peers)
        if problem is not None:
            return _storage_refused(plan, problem)
        plan.section("storage", **render_storage.placement(release, settings).status())
        plan.decision.create += render_training.render(release, settings)
        plan.section("training", job=job_name)
        plan.condition(TRAINED, "Unknown", R.JOB_CREATED, f"training Job {job_name} created")
        plan.condition(READY, "False", R.TRAINING, "the release is not trained yet")
        return plan.phase(Phase.PENDING, R.TRAINING_JOB_CREATED, f"created training Job {job_name}")

    state = children.job_state(job)
    raw = children.termination_message(list(observed.training_pods), render_training.CONTAINER)
    result = children.parse_result(raw, TrainingResult)
    plan.section(
        "training",
        job=job_name,
        startTime=state.start_time,
        completionTime=state.completion_time,
        attempts=state.attempts,
    )
    if result is not None:
        _record_training_result(plan, result)

    if state.state in ("pending", "running"):
        stuck = children.start_problem(list(observed.waiting_pods), render_training.CONTAINER)
        if stuck is not None:
            started = plan.old.get("phase") == Phase.TRAINING
            return _cannot_start(plan, stuck, job, TRAINED, Phase.TRAINING if started else Phase.PENDING)
    if state.state == "pending" and plan.old.get("phase") != Phase.TRAINING:
        plan.condition(TRAINED, "Unknown", R.SCHEDULING, "waiting for the training pod to start")
        plan.condition(READY, "False", R.TRAINING, "the release is not trained yet")
        return plan.phase(Phase.PENDING, R.TRAINING_PENDING, f"training Job {job_name} is waiting for its pod")
    # A Job between attempts (the last pod gone, its replacement not running yet) reads as pending:
    # once training has started that is still training, never a success.
    if state.state in ("running", "pending"):
        plan.condition(TRAINED, "Unknown", R.TRAINING, f"training (attempt {max(state.attempts, 1)})")
        plan.condition(READY, "False", R.TRAINING, "the release is not trained yet")
        _progress(plan, observed, "training", state.attempts)
        return plan.phase(Phase.TRAINING, R.TRAINING_STARTED, f"training Job {job_name} is running")
    if state.state == "failed":
        if result is not None and result.outcome == "Diverged":
            plan.condition(TRAINED, "False", R.LOSS_DIVERGED, result.message or "the training loss diverged")
            plan.condition(READY, "False", R.REJECTED, f"training loss diverged: {result.message}".strip())
            return plan.phase(Phase.REJECTED, R.LOSS_DIVERGED, f"training loss diverged: {result.message}".strip())
        # The trainer's own words (its result, or the log tail the kubelet kept) say most.
        detail = result.message if result else (raw or "").strip()[-2000:]
        message = "; ".join(part for part in (state.message, detail) if part) or state.reason
        reason = _STORAGE_OUTCOMES.get(result.outcome if result else "") or state.reason or R.JOB_FAILED
        ooms = children.oom_killed(list(observed.training_pods), render_training.CONTAINER)
        if ooms and reason not in _STORAGE_OUTCOMES.values():
            reason, message = R.OOM_KILLED, _oom_message(release, ooms, state.attempts)
        plan.condition(TRAINED, "False", reason, message)
        plan.condition(READY, "False", R.FAILED, f"training failed (checkpoints are kept): {message}")
        named = (*_STORAGE_OUTCOMES.values(), R.OOM_KILLED)
        event_reason = reason if reason in named else f"Training{state.reason or 'Failed'}"
        return plan.phase(Phase.FAILED, event_reason, f"training Job {job_name} failed: {message}")

    # succeeded
    plan.condition(TRAINED, "True", R.TRAINED_OK, _trained_message(result))
    guard = release.spec.evaluation.loss_guard if release.spec.evaluation else None
    if (
        guard
        and guard.max_final_loss is not None
        and result
        and result.final_loss is not None
        and result.final_loss > guard.max_final_loss
    ):
        message = f"final training loss {result.final_loss:g} is above maxFinalLoss {guard.max_final_loss:g}"
        plan.condition(EVALUATED, "False", R.FINAL_LOSS_TOO_HIGH, message)
        plan.condition(READY, "False", R.REJECTED, message)
        return plan.phase(Phase.REJECTED, R.FINAL_LOSS_TOO_HIGH, message)
    return None


def _progress(plan: Plan, observed: Observed, stage: str, attempts: int) -> None:
    """status.progress of a running stage: what its pod reports now, else (not readable this time)
    what it reported last; the milestones it passes as Events: the run's first complete checkpoint,
    and an attempt that resumed from one."""
    old = plan.old.get("progress") or {}
    if old.get("stage") != stage:
        old = {}
    now = observed.progress
    if now is None or now.stage != stage:
        if old:
            plan.status["progress"] = old
        return
    plan.section("progress", **now.status(plan.now))
    # Once per stage: the first report that has a complete checkpoint. That may come from a resumed
    # attempt: a pod stopped within a progress interval of its first checkpoint was never seen with it.
    if now.checkpoint_step is not None and old.get("checkpointStep") is None:
        message = f"checkpoint at step {now.checkpoint_step} is complete: the run resumes from there if stopped"
        plan.decision.events.append(Event("Normal", R.CHECKPOINT_SAVED, message))
    if now.resumed_from_step is not None and old.get("resumedFromStep") != now.resumed_from_step:
        message = f"attempt {max(attempts, 1)} resumed from the checkpoint at step {now.resumed_from_step}"
        plan.decision.events.append(Event("Normal", R.RESUMED, message))


# Trainer outcomes that are about the volume, not the code: their reason says so.
_STORAGE_OUTCOMES = {"StorageFull": R.STORAGE_FULL, "StorageConflict": R.STORAGE_CONFLICT}


def _oom_message(release: LegalModelRelease, ooms: int, attempts: int) -> str:
    limit = release.spec.training.resources.memory or "none set: the node's memory"
    return (
        f"the trainer ran out of memory (OOMKilled in {ooms} of {attempts} attempts; memory limit {limit}): "
        "lower spec.training.hyperparameters.perDeviceBatchSize (raise gradientAccumulationSteps to keep the "
        "global batch), shorten spec.training.cutoffLength, or raise spec.training.resources.memory; "
        "checkpoints are kept"
    )


def _cannot_start(
    plan: Plan, problem: children.StartProblem, job: dict[str, Any], stage: str, waiting: Phase
) -> Decision:
    """A stage pod that does not start says why; an image or config problem fails the release after
    the start deadline (and its Job goes: the waiting pod holds a node's GPUs)."""
    name = "training" if stage == TRAINED else "evaluation"
    deadline = plan.release.spec.training.start_deadline_seconds
    waited = max(children.seconds_between(problem.since, plan.now), 0) if problem.since else 0
    message = f"the {name} pod cannot start: {problem.reason}: {problem.message}"
    if problem.fatal and waited >= deadline:
        message += f" (for {waited:.0f} s; spec.training.startDeadlineSeconds is {deadline})"
        plan.decision.delete.append(job)
        plan.condition(stage, "False", problem.reason, message)
        plan.condition(READY, "False", R.FAILED, f"{name} failed: {message}")
        return plan.phase(Phase.FAILED, R.START_DEADLINE_EXCEEDED, message)
    if problem.fatal:
        message += f"; the release fails if it lasts {deadline} s (spec.training.startDeadlineSeconds)"
    else:
        message += "; waiting for a node (an autoscaler or a queue may bring one)"
    old = cond.get(plan.old.get("conditions") or [], stage)
    if old is None or old.get("reason") != problem.reason:
        plan.decision.events.append(Event("Warning", problem.reason, message))
    plan.condition(stage, "Unknown", problem.reason, message)
    plan.condition(READY, "False", R.TRAINING if stage == TRAINED else R.EVALUATING, message)
    plan.status["phase"] = waiting.value  # the Warning above is its event
    return plan.decision


def _storage_refused(plan: Plan, problem: storage.Finding) -> Decision:
    """Nothing is created while the placement is unusable; an edit of spec.storage (or the operator's
    default claim) lets the release start."""
    trained = cond.get(plan.old.get("conditions") or [], TRAINED)
    if trained is None or trained.get("message") != problem.message:
        plan.decision.events.append(Event("Warning", problem.reason, problem.message))
    plan.condition(TRAINED, "False", problem.reason, problem.message)
    plan.condition(READY, "False", problem.reason, f"not started: {problem.message}")
    plan.status["phase"] = Phase.PENDING.value  # the Warning above is its event
    return plan.decision


def _record_training_result(plan: Plan, result: TrainingResult) -> None:
    for key, values in result.status_sections().items():
        plan.section(key, **values)


def _trained_message(result: TrainingResult | None) -> str:
    if result is None:
        return "training Job succeeded (no result reported)"
    parts = [
        f"{result.global_step} steps" if result.global_step is not None else "",
        f"final loss {result.final_loss:g}" if result.final_loss is not None else "",
    ]
    return "trained: " + ", ".join(p for p in parts if p) if any(parts) else "trained"


# --- evaluation -------------------------------------------------------------------------------


def _evaluation(plan: Plan, observed: Observed, settings: OperatorSettings) -> Decision | None:
    release = plan.release
    spec = release.spec.evaluation
    if spec is None:
        plan.condition(EVALUATED, "True", R.NOT_CONFIGURED, "no evaluation configured")
        return None
    job_name = names.evaluation_job_name(release)
    bench = spec.benchmark.name or spec.benchmark.path
    plan.section("evaluation", job=job_name, benchmark=bench, minScore=spec.min_score)
    job = observed.evaluation_job
    if job is None:
        if cond.get(plan.status["conditions"], EVALUATED) and "score" in (plan.status.get("evaluation") or {}):
            return _gate(plan, plan.status["evaluation"]["score"])  # evaluated earlier; Job cleaned up
        plan.decision.create += render_evaluation.render(release, settings)
        plan.condition(EVALUATED, "Unknown", R.JOB_CREATED, f"evaluation Job {job_name} created")
        plan.condition(READY, "False", R.EVALUATING, f"scoring on {bench}")
        return plan.phase(Phase.EVALUATING, R.EVALUATION_STARTED, f"scoring on {bench}")
    state = children.job_state(job)
    if state.state in ("pending", "running"):
        stuck = children.start_problem(list(observed.waiting_pods), render_evaluation.CONTAINER)
        if stuck is not None:
            return _cannot_start(plan, stuck, job, EVALUATED, Phase.EVALUATING)
        plan.condition(EVALUATED, "Unknown", R.EVALUATING, f"scoring on {bench}")
        plan.condition(READY, "False", R.EVALUATING, f"scoring on {bench}")
        _progress(plan, observed, "evaluation", state.attempts)
        return plan.phase(Phase.EVALUATING, R.EVALUATION_STARTED, f"scoring on {bench}")
    message = children.termination_message(list(observed.evaluation_pods), render_evaluation.CONTAINER)
    result = children.parse_result(message, EvaluationResult)
    if state.state == "failed" or result is None:
        why = state.message or message or "the evaluation reported no score"
        plan.condition(EVALUATED, "False", R.EVALUATION_FAILED, why)
        plan.condition(READY, "False", R.FAILED, f"evaluation failed: {why}")
        return plan.phase(Phase.FAILED, R.EVALUATION_FAILED, f"evaluation Job {job_name} failed: {why}")
    plan.section("evaluation", protocol=result.protocol, subjects=result.summary(), chart=result.chart)
    return _gate(plan, result.score)


def _gate(plan: Plan, score: float) -> Decision | None:
    spec = plan.release.spec.evaluation
    assert spec is not None
    passed = score >= spec.min_score
    plan.section("evaluation", score=score, passed=passed)
    if not passed:
        message = f"score {score:g} is below minScore {spec.min_score:g}"
        plan.condition(EVALUATED, "False", R.SCORE_BELOW_THRESHOLD, message)
        plan.condition(READY, "False", R.REJECTED, f"{message}: never served")
        return plan.phase(Phase.REJECTED, R.SCORE_BELOW_THRESHOLD, message)
    plan.condition(EVALUATED, "True", R.PASSED, f"score {score:g} >= minScore {spec.min_score:g}")
    return None
