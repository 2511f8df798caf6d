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
from ..render import names, pod
from ..render import serving as render_serving
from ..render import storage as render_storage
from ..render import training as render_training
from ..render.settings import OperatorSettings
from . import children, consistency, retention, storage
from . import conditions as cond
from .conditions import DEPLOYED, EVALUATED, INPUTS_PINNED, READY, TRAINED
from .plan import Decision, Event, Observed, Peer, Plan, ServingView

PREVIOUS_RELEASE_ANNOTATION = f"{names.ANNOTATION_PREFIX}/previous-release"


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.lstrip("v").split("."))


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
    if storage.is_deleting(release):
        return retention.reclaim(plan, observed, settings)
    retention.finalizer(plan)
    _inputs(plan)
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
    return _serving(plan, observed.serving, settings)


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

    if state.state == "pending" and plan.old.get("phase") != Phase.TRAINING:
        plan.condition(TRAINED, "Unknown", R.SCHEDULING, "waiting for the training pod to start")
        plan.condition(READY, "False", R.TRAINING, "the release is not trained yet")
        return plan.phase(Phase.PENDING, R.TRAINING_PENDING, f"training Job {job_name} is waiting for its pod")
    # A Job between attempts (the last pod gone, its replacement not running yet) reads as pending:
    # once training has started that is still training, never a success.
    if state.state in ("running", "pending"):
        plan.condition(TRAINED, "Unknown", R.TRAINING, f"training (attempt {max(state.attempts, 1)})")
        plan.condition(READY, "False", R.TRAINING, "the release is not trained yet")
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
        plan.condition(TRAINED, "False", reason, message)
        plan.condition(READY, "False", R.FAILED, f"training failed (checkpoints are kept): {message}")
        event_reason = reason if reason in _STORAGE_OUTCOMES.values() else f"Training{state.reason or 'Failed'}"
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


# Trainer outcomes that are about the volume, not the code: their reason says so.
_STORAGE_OUTCOMES = {"StorageFull": R.STORAGE_FULL, "StorageConflict": R.STORAGE_CONFLICT}


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
        plan.condition(EVALUATED, "Unknown", R.EVALUATING, f"scoring on {bench}")
        plan.condition(READY, "False", R.EVALUATING, f"scoring on {bench}")
        return plan.phase(Phase.EVALUATING, R.EVALUATION_STARTED, f"scoring on {bench}")
    message = children.termination_message(list(observed.evaluation_pods), render_evaluation.CONTAINER)
    result = children.parse_result(message, EvaluationResult)
    if state.state == "failed" or result is None:
        why = state.message or message or "the evaluation reported no score"
        plan.condition(EVALUATED, "False", R.EVALUATION_FAILED, why)
        plan.condition(READY, "False", R.FAILED, f"evaluation failed: {why}")
        return plan.phase(Phase.FAILED, R.EVALUATION_FAILED, f"evaluation Job {job_name} failed: {why}")
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


# --- serving ----------------------------------------------------------------------------------


def _serving(plan: Plan, view: ServingView, settings: OperatorSettings) -> Decision:
    release = plan.release
    target = names.serving_target(release)
    me = Peer(release.name, release.spec.version, plan.status.get("phase"), True)
    pinned = children.template_label(view.deployment, names.RELEASE_LABEL)
    # Only a passed release pins the target, so the pinned one counts as passed even when the
    # view of its status lags behind; a release deleted since no longer counts.
    candidates = [
        p
        for p in view.peers
        if p.name != release.name and p.phase not in TERMINAL_PHASES and (p.passed or p.name == pinned)
    ]
    newest = max([me, *candidates], key=lambda p: (version_key(p.version), p.created, p.name))
    key = render_serving.api_key_ref(release, settings)
    plan.section(
        "serving",
        target=target,
        deployment=target,
        service=target,
        endpoint=render_serving.endpoint(release),
        apiKeySecret=str(key) if key else None,
    )
    if newest.name == release.name and key is not None and key.generated and view.key_version is None:
        # Serving is closed by default: no key named anywhere, so the target gets one of its own.
        plan.decision.generate_key = key
        return plan.decision

    if newest.name != release.name:
        if plan.old.get("phase") == Phase.SERVING and newest.phase != Phase.SERVING:
            return plan.decision  # its pods serve until the newer release's are ready
        serving = plan.status.get("serving") or {}
        plan.section(
            "serving",
            supersededBy=newest.name,
            servedUntil=serving.get("servedUntil") or (plan.now if serving.get("servingSince") else None),
        )
        plan.condition(DEPLOYED, "False", R.SUPERSEDED, f"{newest.name} ({newest.version}) serves {target}")
        plan.condition(READY, "False", R.SUPERSEDED, f"{newest.name} ({newest.version}) serves {target}")
        return plan.phase(Phase.SUPERSEDED, R.SUPERSEDED, f"{newest.name} ({newest.version}) now serves {target}")

    previous_name = previous_release_name(release.name, view.deployment)
    previous = view.previous if view.previous and view.previous.name == previous_name else None

    if pinned == release.name:
        rollout = children.rollout_state(view.deployment or {})
        if rollout.state == "failed" and plan.old.get("phase") == Phase.ROLLING_OUT:
            return _roll_back(plan, previous, rollout.message, settings, view.key_version)
        # Otherwise the deadline belongs to a rollout this release did not start (e.g. the one
        # rolled back to it): its own template is being restored, so wait for that.
        plan.section("serving", readyReplicas=rollout.ready_replicas)
        if rollout.state != "complete":
            plan.decision.apply += _serving_objects(release, previous, settings, view.key_version)
            plan.condition(DEPLOYED, "Unknown", R.ROLLING_OUT, rollout.message)
            plan.condition(READY, "False", R.ROLLING_OUT, rollout.message)
            return plan.phase(Phase.ROLLING_OUT, R.ROLLOUT_STARTED, f"rolling {target} to {release.spec.version}")
        plan.decision.apply += _serving_objects(release, previous, settings, view.key_version)
        plan.section(
            "serving",
            revision=release.spec.version,
            servingSince=(plan.status.get("serving") or {}).get("servingSince") or plan.now,
        )
        plan.status["serving"].pop("supersededBy", None)  # serving again, e.g. after a newer one rolled back
        plan.status["serving"].pop("servedUntil", None)
        plan.condition(DEPLOYED, "True", R.ROLLOUT_COMPLETE, f"{target} serves {release.spec.version}")
        plan.condition(READY, "True", R.SERVING, f"{target} serves {release.spec.version}")
        return plan.phase(Phase.SERVING, R.SERVING, f"{target} serves {release.spec.version}")

    # Pin the target to this release; remember who served before, for rollback.
    plan.decision.apply += _serving_objects(release, previous, settings, view.key_version)
    if previous is not None:
        plan.section("serving", previousRevision=previous.spec.version)
    plan.condition(DEPLOYED, "Unknown", R.ROLLING_OUT, f"rolling {target} to {release.spec.version}")
    plan.condition(READY, "False", R.ROLLING_OUT, "new serving pods are not ready yet")
    return plan.phase(Phase.ROLLING_OUT, R.ROLLOUT_STARTED, f"rolling {target} to {release.spec.version}")


def previous_release_name(release_name: str, deployment: dict[str, Any] | None) -> str | None:
    """Who served the target before `release_name` took it: the release pinned now, or, once
    this release is pinned, the one the Deployment remembers."""
    pinned = children.template_label(deployment, names.RELEASE_LABEL)
    if pinned and pinned != release_name:
        return pinned
    return children.annotation(deployment, PREVIOUS_RELEASE_ANNOTATION) or None


def _serving_objects(
    release: LegalModelRelease,
    previous: LegalModelRelease | None,
    settings: OperatorSettings,
    key_version: str | None,
) -> list[dict[str, Any]]:
    """Deployment, Service and NetworkPolicy pinned to `release`. Both releases own them, so deleting
    the newer release alone never takes the target down (garbage collection waits for every owner)."""
    objects = render_serving.render(release, settings, key_version)
    for obj in objects:
        meta = obj["metadata"]
        if previous is not None and previous.metadata.uid:
            meta["ownerReferences"] = [
                *meta.get("ownerReferences", []),
                pod.owner_reference(previous, controller=False),
            ]
        if obj["kind"] == "Deployment":
            meta.setdefault("annotations", {})[PREVIOUS_RELEASE_ANNOTATION] = previous.name if previous else ""
    return objects


def _roll_back(
    plan: Plan, previous: LegalModelRelease | None, why: str, settings: OperatorSettings, key_version: str | None
) -> Decision:
    release = plan.release
    target = names.serving_target(release)
    if previous is not None:
        # The previous release pins the target again, remembering nobody before it.
        # The key version holds only if the previous release reads the same Secret.
        same_key = render_serving.api_key_ref(previous, settings) == render_serving.api_key_ref(release, settings)
        plan.decision.apply += _serving_objects(previous, None, settings, key_version if same_key else None)
        restored = f"; {target} serves {previous.spec.version} again"
    else:
        restored = "; there is no previous revision to restore"
    message = f"new pods never became ready ({why}){restored}"
    plan.section("serving", readyReplicas=0)
    plan.condition(DEPLOYED, "False", R.PROGRESS_DEADLINE_EXCEEDED, message)
    plan.condition(READY, "False", R.ROLLED_BACK, message)
    return plan.phase(Phase.ROLLED_BACK, R.ROLLED_BACK, message)
