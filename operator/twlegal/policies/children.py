"""Reading the state of child objects: Jobs, their pods' termination messages, Deployments (pure)."""

from __future__ import annotations

import datetime as dt
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


# --- ownership ---------------------------------------------------------------------------------


def owned_by(obj: dict[str, Any], uid: str | None) -> bool:
    """Whether a child found by name is this release's own and still live: its owner references carry
    the release's UID and it is not being deleted. A release deleted and created again under the same
    name finds the earlier one's children until garbage collection removes them."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    return bool(uid) and any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or [])


# --- pods that do not start, and how pods ended ------------------------------------------------

# Waiting reasons of the kubelet that do not pass by themselves: the image or the pod's config.
IMAGE_PROBLEMS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_PROBLEMS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})


@dataclass(frozen=True)
class StartProblem:
    reason: str  # the kubelet's or the scheduler's word: ImagePullBackOff, Unschedulable, ...
    message: str
    since: str  # when the pod was created (RFC 3339)
    fatal: bool  # image and config problems fail the release after its start deadline


def start_problem(pods: list[dict[str, Any]], container: str) -> StartProblem | None:
    """Why the newest pod of a stage is not running yet, when it says so."""
    for pod in sorted(pods, key=lambda p: str(p.get("metadata", {}).get("creationTimestamp") or ""), reverse=True):
        since = str(pod.get("metadata", {}).get("creationTimestamp") or "")
        status = pod.get("status") or {}
        for cstatus in status.get("containerStatuses") or []:
            waiting = (cstatus.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            if cstatus.get("name") == container and reason in IMAGE_PROBLEMS | CONFIG_PROBLEMS:
                return StartProblem(reason, waiting.get("message") or reason, since, fatal=True)
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                reason = condition.get("reason") or "Unschedulable"
                return StartProblem(reason, condition.get("message") or reason, since, fatal=False)
        return None
    return None


def tells_why_not_started(pod: dict[str, Any]) -> bool:
    """Whether a pod's status names what start_problem() reads: an image or config error of a
    container, or no node for it. A pod just created (no reason yet) tells nothing."""
    status = pod.get("status") or {}
    for cstatus in status.get("containerStatuses") or []:
        if ((cstatus.get("state") or {}).get("waiting") or {}).get("reason") in IMAGE_PROBLEMS | CONFIG_PROBLEMS:
            return True
    return any(c.get("type") == "PodScheduled" and c.get("status") == "False" for c in status.get("conditions") or [])


def oom_killed(pods: list[dict[str, Any]], container: str) -> int:
    """How many of the pods' `container` ended OOMKilled (the kernel's OOM killer: exit 137)."""
    count = 0
    for pod in pods:
        for cstatus in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (cstatus.get("state") or {}).get("terminated") or {}
            if cstatus.get("name") == container and terminated.get("reason") == "OOMKilled":
                count += 1
    return count


def seconds_between(start: str, end: str) -> float:
    """Seconds from one RFC 3339 time (as the API server writes them) to another."""

    def parse(value: str) -> dt.datetime:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))

    return (parse(end) - parse(start)).total_seconds()
