"""The training stage: a ConfigMap with the trainer's config and a one-pod Job that runs it."""

from __future__ import annotations

import hashlib
from typing import Any

from ..api.release import LegalModelRelease
from ..api.sources import DatasetColumns, DatasetTags
from ..api.spec import LossGuard
from ..contracts.training import (
    CONFIG_FILE,
    RETRIABLE_EXIT_CODES,
    DatasetSource,
    ExitCode,
    ModelSource,
    TrainingConfig,
)
from . import names, pod, storage
from .settings import OperatorSettings

CONTAINER = "trainer"
SHUTDOWN_MARGIN_SECONDS = 20


def training_config(release: LegalModelRelease, settings: OperatorSettings) -> TrainingConfig:
    spec = release.spec
    training = spec.training
    gpus = training.resources.gpus

    def on_volume(path: str | None) -> str | None:
        return pod.volume_path(settings, path) if path else None

    return TrainingConfig(
        release=storage.identity(release),
        base_model=ModelSource(
            name=spec.base_model.name, revision=spec.base_model.revision, path=on_volume(spec.base_model.path)
        ),
        datasets=[
            DatasetSource(
                name=d.name,
                revision=d.revision,
                subset=d.subset,
                split=d.split,
                path=on_volume(d.path),
                format=d.format,
                columns=d.columns or DatasetColumns(),
                tags=d.tags or DatasetTags(),
                max_samples=d.max_samples,
            )
            for d in spec.datasets
        ],
        method=training.method,
        template=training.template,
        cutoff_length=training.cutoff_length,
        packing=training.packing,
        max_dropped_samples_percent=training.max_dropped_samples_percent,
        hyperparameters=training.hyperparameters,
        deepspeed=training.deepspeed,
        loss_guard=spec.evaluation.loss_guard if spec.evaluation else LossGuard(),
        processes=gpus or settings.cpu_processes,
        use_cpu=gpus == 0,
        checkpoint_dir=storage.checkpoint_dir(release, settings),
        checkpoint_every_steps=training.checkpoint_every_steps,
        output_dir=storage.artifact_dir(release, settings),
        hub_offline=spec.hub.offline,
        # The launcher needs a moment after the ranks to write the result before the kubelet's SIGKILL.
        shutdown_timeout_seconds=max(settings.training_grace_seconds - SHUTDOWN_MARGIN_SECONDS, 1),
        spec=spec,
    )


def config_map(release: LegalModelRelease, settings: OperatorSettings) -> dict[str, Any]:
    config = training_config(release, settings).to_json()
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": pod.object_meta(release, names.training_job_name(release), names.labels(release, "training")),
        "data": {CONFIG_FILE: config},
    }


def config_hash(config_map_obj: dict[str, Any]) -> str:
    return hashlib.sha256(config_map_obj["data"][CONFIG_FILE].encode()).hexdigest()[:16]


def pod_failure_policy() -> dict[str, Any]:
    """Preemption, eviction, node loss and OOM (exit 137) are retried, each retry counted against
    spec.training.maxRetries, so none can repeat forever; a code error fails the Job at once."""
    return {
        "rules": [
            {"action": "Count", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "NotIn",
                    "values": sorted({int(ExitCode.SUCCEEDED), *RETRIABLE_EXIT_CODES}),
                },
            },
        ]
    }


def job(release: LegalModelRelease, settings: OperatorSettings) -> dict[str, Any]:
    training = release.spec.training
    res = training.resources
    cm = config_map(release, settings)
    job_labels = names.labels(release, "training")
    config_path = f"{settings.config_mount_path}/{CONFIG_FILE}"
    container = {
        "name": CONTAINER,
        "image": training.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        # The entrypoint starts one process per GPU (torchrun) with DeepSpeed.
        "command": ["twlegal-train"],
        "args": ["run", "--config", config_path],
        "env": [
            {"name": "TWLEGAL_RELEASE", "value": f"{release.namespace}/{release.name}"},
            *pod.hub_env(release, settings, reads_hub=reads_hub(release)),
            {"name": "HOME", "value": "/tmp"},
            *([{"name": "DS_ACCELERATOR", "value": "cpu"}] if res.gpus == 0 else []),
        ],
        "resources": pod.resources(res, res.gpus),
        "volumeMounts": [
            {"name": pod.CONFIG_VOLUME, "mountPath": settings.config_mount_path, "readOnly": True},
            {"name": pod.STORAGE_VOLUME, "mountPath": settings.storage_mount_path},
            {"name": pod.SHM_VOLUME, "mountPath": "/dev/shm"},
        ],
        **pod.REPORTS_RESULT,
        **pod.PROGRESS_PORTS,
        "securityContext": pod.container_security_context(),
    }
    pod_spec: dict[str, Any] = {
        **pod.NO_API_TOKEN,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": settings.training_grace_seconds,
        "securityContext": pod.pod_security_context(settings),
        "containers": [container],
        "volumes": [
            {"name": pod.CONFIG_VOLUME, "configMap": {"name": cm["metadata"]["name"]}},
            storage.storage_volume(release, settings),
            pod.shm_volume(res.shared_memory),
        ],
        **pod.placement(res),
    }
    annotations = {f"{names.ANNOTATION_PREFIX}/config-hash": config_hash(cm)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": pod.object_meta(release, names.training_job_name(release), job_labels, annotations),
        "spec": {
            "backoffLimit": training.max_retries,
            "podFailurePolicy": pod_failure_policy(),
            "completions": 1,
            "parallelism": 1,
            "template": {
                "metadata": {"labels": job_labels, "annotations": {**annotations, **pod.SCRAPE_PROGRESS}},
                "spec": pod_spec,
            },
        },
    }


def reads_hub(release: LegalModelRelease) -> bool:
    """Whether training loads anything from the hub (a named base model or dataset)."""
    return bool(release.spec.base_model.name) or any(d.name for d in release.spec.datasets)


def network_policy(release: LegalModelRelease, settings: OperatorSettings) -> dict[str, Any]:
    name = names.training_job_name(release)
    return pod.job_network_policy(release, settings, name, "training", reads_hub=reads_hub(release))


def render(release: LegalModelRelease, settings: OperatorSettings) -> list[dict[str, Any]]:
    return [config_map(release, settings), network_policy(release, settings), job(release, settings)]
