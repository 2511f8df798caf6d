"""Reading the state of child objects: Jobs, their pods' termination messages, Deployments (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class JobState:
    state: Literal["pending", "running", "succeeded", "failed"]
    reason: str = ""
    message: str = ""
    attempts: int = 0
    start_time: str | None = None
    completion_time: str | None = None


def job_state(job: dict[str, Any]) -> JobState:
    status = job.get("status") or {}
    attempts = int(status.get("active", 0)) + int(status.get("failed", 0)) + int(status.get("succeeded", 0))
    start, completion = status.get("startTime"), status.get("completionTime")

    def state(
        name: Literal["pending", "running", "succeeded", "failed"], reason: str = "", message: str = ""
    ) -> JobState:
        return JobState(name, reason, message, attempts=attempts, start_time=start, completion_time=completion)

    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return state("succeeded", cond.get("reason", "Completed"), cond.get("message", ""))
        if cond.get("type") == "Failed":
            return state("failed", cond.get("reason", "Failed"), cond.get("message", ""))
    uncounted = status.get("uncountedTerminatedPods") or {}
    if (
        int(status.get("ready", 0)) > 0
        or int(status.get("failed", 0)) > 0
        or int(status.get("succeeded", 0)) > 0
        or uncounted.get("succeeded")
        or uncounted.get("failed")
    ):
        return state("running")  # a pod ran; the Job controller has not concluded yet
    return state("pending")


def is_finished(job: dict[str, Any] | None) -> bool:
    return job is not None and job_state(job).state in ("succeeded", "failed")


def termination_message(pods: list[dict[str, Any]], container: str) -> str | None:
    """The termination message of `container` in the newest pod that has one."""

    def created(pod: dict[str, Any]) -> str:
        return str(pod.get("metadata", {}).get("creationTimestamp") or "")

    for pod in sorted(pods, key=created, reverse=True):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated")
            if status.get("name") == container and terminated and terminated.get("message"):
                return str(terminated["message"])
    return None


def parse_result(message: str | None, model: type[T]) -> T | None:
    """A contract object from a termination message, or None when it is not one (e.g. a log tail)."""
    if not message:
        return None
    try:
        return model.model_validate(json.loads(message))
    except (ValueError, ValidationError):
        return None


@dataclass(frozen=True)
class RolloutState:
    state: Literal["progressing", "complete", "failed"]
    ready_replicas: int
    message: str = ""


def rollout_state(deployment: dict[str, Any]) -> RolloutState:
    """What `kubectl rollout status` would say."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    ready = int(status.get("readyReplicas", 0))
    generation = deployment.get("metadata", {}).get("generation", 0)
    if status.get("observedGeneration", 0) < generation:
        return RolloutState("progressing", ready, "waiting for the Deployment controller")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return RolloutState("failed", ready, cond.get("message", "progress deadline exceeded"))
    want = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    total = int(status.get("replicas", 0))
    available = int(status.get("availableReplicas", 0))
    if updated == want and total == want and available == want:
        return RolloutState("complete", ready)
    return RolloutState("progressing", ready, f"{available}/{want} new pods available, {total - updated} old remaining")


def template_label(deployment: dict[str, Any] | None, key: str) -> str | None:
    if not deployment:
        return None
    return (deployment.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}).get(key)


def annotation(obj: dict[str, Any] | None, key: str) -> str | None:
    if not obj:
        return None
    return (obj.get("metadata", {}).get("annotations") or {}).get(key)
