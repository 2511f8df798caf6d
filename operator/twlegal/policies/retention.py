"""Steps of decide() that look after a release's directories once written: the reclaim finalizer,
pruning checkpoints when training has settled, and reclaiming everything when the release is
deleted with reclaimPolicy Delete (pure: plans storage Jobs, never touches the volume itself)."""

from __future__ import annotations

from ..api import reasons as R
from ..contracts.storage import StorageResult
from ..render import names
from ..render import storage as render_storage
from ..render.settings import OperatorSettings
from . import children, storage
from .plan import Decision, Event, Observed, Plan


def _without_reclaim(finalizers: list[str]) -> list[str]:
    return [f for f in finalizers if f != storage.RECLAIM_FINALIZER]


def finalizer(plan: Plan) -> None:
    """reclaimPolicy Delete holds the release's deletion until its directories are removed."""
    current = list(plan.release.metadata.finalizers or [])
    has = storage.RECLAIM_FINALIZER in current
    if storage.wants_finalizer(plan.release) and not has:
        plan.decision.finalizers = [*current, storage.RECLAIM_FINALIZER]
    elif not storage.wants_finalizer(plan.release) and has:
        plan.decision.finalizers = _without_reclaim(current)


def _job_result(observed: Observed) -> tuple[str, StorageResult | None]:
    """The storage Job's state and what its pod reported."""
    assert observed.storage_job is not None
    state = children.job_state(observed.storage_job)
    raw = children.termination_message(list(observed.storage_pods), render_storage.CONTAINER)
    return state.state, children.parse_result(raw, StorageResult)


def _summary(result: StorageResult | None, fallback: str) -> str:
    if result is None:
        return fallback
    parts = [result.message] if result.message else []
    if result.removed:
        parts.append(f"removed {', '.join(result.removed)} ({result.freed_bytes} bytes)")
    if result.kept:
        parts.append(f"kept {'; '.join(result.kept)}")
    return "; ".join(parts) or fallback


def retention(plan: Plan, observed: Observed, settings: OperatorSettings) -> None:
    """Once training has settled: one prune Job keeping spec.storage.retention's checkpoints."""
    keep = storage.retention_keep(plan.release)
    if keep is None:
        return
    if observed.storage_job is None:
        task = render_storage.prune_task(plan.release, settings, keep)
        plan.decision.create.append(
            render_storage.job(plan.release, settings, storage.prune_job_name(plan.release), task)
        )
        plan.section("storage", message=f"pruning checkpoints, keeping the newest {keep} complete")
        return
    state, result = _job_result(observed)
    if state in ("pending", "running"):
        return
    if state == "succeeded":
        message = _summary(result, "checkpoints pruned")
        plan.section("storage", checkpointsPruned=True, message=message)
        plan.decision.events.append(Event("Normal", R.CHECKPOINTS_PRUNED, message))
    else:
        message = "pruning failed (checkpoints kept): " + _summary(result, "see the prune Job's pod log")
        plan.section("storage", checkpointsPruned=False, message=message)  # not retried: nothing was lost
        plan.decision.events.append(Event("Warning", R.PRUNE_FAILED, message))


def reclaim(plan: Plan, observed: Observed, settings: OperatorSettings) -> Decision:
    """A release being deleted: with the reclaim finalizer, stop its Jobs, remove its directories
    (keeping weights its target still serves), then let it go."""
    release = plan.release
    current = list(release.metadata.finalizers or [])
    if storage.RECLAIM_FINALIZER not in current:
        return plan.decision  # Retain: the directories stay; garbage collection does the rest
    if not (plan.old.get("storage") or {}).get("checkpointPath"):
        plan.decision.finalizers = _without_reclaim(current)
        return plan.decision  # it never got a training Job: nothing of it is on the volume
    # Nothing may write while its directories go: stop the stages still running first.
    running = [job for job in (observed.training_job, observed.evaluation_job) if job and not children.is_finished(job)]
    if running:
        plan.decision.delete += running
        plan.section("storage", message="stopping the release's Jobs before its directories are removed")
        return plan.decision
    if observed.serving is None:
        plan.decision.needs_serving = True
        return plan.decision
    if observed.storage_job is None:
        keep_weights = storage.serves_weights(release, observed.serving.deployment)
        task = render_storage.reclaim_task(release, settings, keep_weights=keep_weights)
        plan.decision.create.append(render_storage.job(release, settings, storage.reclaim_job_name(release), task))
        what = "checkpoints (the weights are kept: the target still serves them)" if keep_weights else "directories"
        plan.section("storage", message=f"removing the release's {what}")
        plan.decision.events.append(Event("Normal", R.RECLAIMING, f"removing the release's {what}"))
        if keep_weights:
            target = names.serving_target(release)
            plan.decision.events.append(
                Event(
                    "Warning",
                    R.WEIGHTS_KEPT,
                    f"{target} still serves the weights at {render_storage.artifact_dir(release, settings)}: "
                    "they are not removed; delete them by hand once nothing serves them",
                )
            )
        return plan.decision
    state, result = _job_result(observed)
    if state in ("pending", "running"):
        return plan.decision
    if state == "succeeded":
        message = _summary(result, "directories removed")
        plan.section("storage", message=message)
        plan.decision.events.append(Event("Normal", R.STORAGE_RECLAIMED, message))
        plan.decision.finalizers = _without_reclaim(current)
        return plan.decision
    message = (
        "reclaiming failed; the release stays until it succeeds or the finalizer "
        f"{storage.RECLAIM_FINALIZER} is removed by hand: " + _summary(result, "see the reclaim Job's pod log")
    )
    if (plan.old.get("storage") or {}).get("message") != message:
        plan.decision.events.append(Event("Warning", R.RECLAIM_FAILED, message))
    plan.section("storage", message=message)
    return plan.decision
