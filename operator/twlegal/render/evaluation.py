"""The evaluation stage: score the trained weights on the release's benchmark in a Job."""

from __future__ import annotations

from typing import Any

from ..api.release import LegalModelRelease
from ..api.sources import BenchmarkColumns
from ..contracts.evaluation import CONFIG_FILE, RESULT_FILE, EvaluationConfig
from ..contracts.training import ModelSource
from . import names, pod, storage
from .settings import OperatorSettings

CONTAINER = "evaluator"


def evaluation_config(release: LegalModelRelease, settings: OperatorSettings) -> EvaluationConfig:
    if release.spec.evaluation is None:
        raise ValueError(f"release {release.name} has no spec.evaluation")
    bench = release.spec.evaluation.benchmark
    artifact = storage.artifact_dir(release, settings)
    return EvaluationConfig(
        release=storage.identity(release),
        model_path=artifact,
        benchmark=ModelSource(
            name=bench.name, revision=bench.revision, path=pod.volume_path(settings, bench.path) if bench.path else None
        ),
        benchmark_split=bench.split,
        benchmark_subset=bench.subset,
        columns=bench.columns or BenchmarkColumns(),
        protocol=bench.protocol,
        result_path=f"{artifact}/{RESULT_FILE}",
        use_cpu=release.spec.evaluation.gpus == 0,
        hub_offline=release.spec.hub.offline,
    )


def config_map(release: LegalModelRelease, settings: OperatorSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": pod.object_meta(release, names.evaluation_job_name(release), names.labels(release, "evaluation")),
        "data": {CONFIG_FILE: evaluation_config(release, settings).to_json()},
    }


def job(release: LegalModelRelease, settings: OperatorSettings) -> dict[str, Any]:
    evaluation = release.spec.evaluation
    assert evaluation is not None
    job_labels = names.labels(release, "evaluation")
    # Placement follows training: the evaluation pod needs the same kind of node.
    placement_spec = release.spec.training.resources
    container = {
        "name": CONTAINER,
        "image": release.spec.training.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["twlegal-train"],
        "args": ["evaluate", "--config", f"{settings.config_mount_path}/{CONFIG_FILE}"],
        "env": [*pod.hub_env(release, settings, reads_hub=reads_hub(release)), {"name": "HOME", "value": "/tmp"}],
        "resources": pod.resources(placement_spec.model_copy(update={"cpu": None, "memory": None}), evaluation.gpus),
        "volumeMounts": [
            {"name": pod.CONFIG_VOLUME, "mountPath": settings.config_mount_path, "readOnly": True},
            {"name": pod.STORAGE_VOLUME, "mountPath": settings.storage_mount_path},
        ],
        **pod.REPORTS_RESULT,
        **pod.PROGRESS_PORTS,
        "securityContext": pod.container_security_context(),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": pod.object_meta(release, names.evaluation_job_name(release), job_labels),
        "spec": {
            "backoffLimit": settings.evaluation_retries,
            "completions": 1,
            "parallelism": 1,
            "template": {
                "metadata": {"labels": job_labels, "annotations": pod.SCRAPE_PROGRESS},
                "spec": {
                    **pod.NO_API_TOKEN,
                    "restartPolicy": "Never",
                    "securityContext": pod.pod_security_context(settings),
                    "containers": [container],
                    "volumes": [
                        {"name": pod.CONFIG_VOLUME, "configMap": {"name": names.evaluation_job_name(release)}},
                        storage.storage_volume(release, settings),
                    ],
                    **pod.placement(placement_spec),
                },
            },
        },
    }


def reads_hub(release: LegalModelRelease) -> bool:
    """Whether evaluation loads its benchmark from the hub (the model always comes from the volume)."""
    return release.spec.evaluation is not None and bool(release.spec.evaluation.benchmark.name)


def network_policy(release: LegalModelRelease, settings: OperatorSettings) -> dict[str, Any]:
    name = names.evaluation_job_name(release)
    return pod.job_network_policy(release, settings, name, "evaluation", reads_hub=reads_hub(release))


def render(release: LegalModelRelease, settings: OperatorSettings) -> list[dict[str, Any]]:
    if release.spec.evaluation is None:
        return []
    return [config_map(release, settings), network_policy(release, settings), job(release, settings)]
