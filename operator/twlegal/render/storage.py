"""Where a release's directories are (its placement) and the Jobs that prune and reclaim them.

A placement is resolved once, when the training Job is created, and recorded in status.storage;
from then on every stage (training, evaluation, serving, retention, reclaim) reads it from there,
so a later change of the operator's default claim or of spec.storage never moves a release's data.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from ..api.release import LegalModelRelease
from ..contracts.storage import INPUTS_TOKEN_LENGTH, StorageOwner, StorageTask, inputs_digest
from ..contracts.training import ReleaseIdentity
from . import names, pod
from .settings import OperatorSettings

CONTAINER = "storage"
NO_CLAIM = (
    "spec.storage.pvc is not set and the operator has no default claim (the chart's storage.defaultClaim): "
    "name a PersistentVolumeClaim"
)


class StorageUnset(ValueError):
    """No claim to put the release's data on."""


@dataclass(frozen=True)
class Placement:
    """One release's directories: a claim and two paths relative to its root."""

    claim: str | None
    checkpoint_path: str
    artifact_path: str

    def paths(self) -> tuple[str, str]:
        return self.checkpoint_path, self.artifact_path

    def status(self) -> dict[str, Any]:
        return {"claimName": self.claim, "checkpointPath": self.checkpoint_path, "artifactPath": self.artifact_path}


def expand(template: str, release: LegalModelRelease) -> str:
    """A path template with its tokens replaced, normalised (no `.` segments, no trailing `/`).
    Without a uid (a release rendered outside a cluster) `{uid}` stays as it is."""
    spec = release.spec
    values = {
        "{model}": spec.model,
        "{version}": spec.version,
        "{namespace}": release.namespace,
        "{name}": release.name,
        "{inputs}": inputs_digest(spec)[:INPUTS_TOKEN_LENGTH],
    }
    if release.metadata.uid:
        values["{uid}"] = release.metadata.uid
    path = template
    for token, value in values.items():
        path = path.replace(token, value)
    return posixpath.normpath(path)


def placement(release: LegalModelRelease, settings: OperatorSettings) -> Placement:
    """The placement recorded in status, or else the one spec and the operator's default give now."""
    recorded = release.status.storage if release.status else None
    if recorded and recorded.checkpoint_path and recorded.artifact_path:
        return Placement(recorded.claim_name, recorded.checkpoint_path, recorded.artifact_path)
    storage = release.spec.storage
    claim = storage.pvc.claim_name if storage.pvc else settings.default_storage_claim
    return Placement(claim, expand(storage.checkpoint_path, release), expand(storage.artifact_path, release))


def claim_of(release: LegalModelRelease, settings: OperatorSettings) -> str:
    claim = placement(release, settings).claim
    if claim is None:
        raise StorageUnset(NO_CLAIM)
    return claim


def storage_volume(
    release: LegalModelRelease, settings: OperatorSettings, *, read_only: bool = False
) -> dict[str, Any]:
    return pod.claim_volume(claim_of(release, settings), read_only=read_only)


def checkpoint_dir(release: LegalModelRelease, settings: OperatorSettings) -> str:
    return pod.volume_path(settings, placement(release, settings).checkpoint_path)


def artifact_dir(release: LegalModelRelease, settings: OperatorSettings) -> str:
    return pod.volume_path(settings, placement(release, settings).artifact_path)


def identity(release: LegalModelRelease) -> ReleaseIdentity:
    """Who the release is, as the trainer records it on what it writes."""
    return ReleaseIdentity(
        namespace=release.namespace,
        name=release.name,
        model=release.spec.model,
        version=release.spec.version,
        uid=release.metadata.uid,
        inputs=inputs_digest(release.spec),
    )


def owner(release: LegalModelRelease) -> StorageOwner:
    return identity(release).owner()


# --- storage Jobs: retention and reclaim ---------------------------------------------------------


def prune_task(release: LegalModelRelease, settings: OperatorSettings, keep: int) -> StorageTask:
    return StorageTask(
        action="prune", owner=owner(release), checkpoint_dir=checkpoint_dir(release, settings), keep_checkpoints=keep
    )


def reclaim_task(release: LegalModelRelease, settings: OperatorSettings, *, keep_weights: bool) -> StorageTask:
    return StorageTask(
        action="reclaim",
        owner=owner(release),
        checkpoint_dir=checkpoint_dir(release, settings),
        artifact_dir=None if keep_weights else artifact_dir(release, settings),
    )


def job(release: LegalModelRelease, settings: OperatorSettings, name: str, task: StorageTask) -> dict[str, Any]:
    """A one-pod Job running the trainer image's `storage` command: file operations only, no GPU,
    no API token, no network."""
    job_labels = names.labels(release, CONTAINER)
    container = {
        "name": CONTAINER,
        "image": release.spec.training.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["twlegal-train"],
        "args": ["storage", "--task", task.to_arg()],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": [{"name": pod.STORAGE_VOLUME, "mountPath": settings.storage_mount_path}],
        **pod.REPORTS_RESULT,
        "securityContext": pod.container_security_context(),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": pod.object_meta(release, name, job_labels),
        "spec": {
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": 3600,  # status records what it did
            "template": {
                "metadata": {"labels": job_labels},
                "spec": {
                    **pod.NO_API_TOKEN,
                    "restartPolicy": "Never",
                    "securityContext": pod.pod_security_context(settings),
                    "containers": [container],
                    "volumes": [storage_volume(release, settings)],
                },
            },
        },
    }
