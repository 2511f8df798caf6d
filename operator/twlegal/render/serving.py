"""The serving stage: one vLLM Deployment + Service per serving target, pinned to a release."""

from __future__ import annotations

from typing import Any

from ..api.release import LegalModelRelease
from ..contracts.serving import API_KEY_ENV, PORT, ServingLaunch
from . import names, pod
from .settings import OperatorSettings

CONTAINER = "vllm"
PRE_STOP_SECONDS = 10
REVISION_ANNOTATION = f"{names.ANNOTATION_PREFIX}/revision"
HEALTH_PATH = "/health"


def launch(release: LegalModelRelease, settings: OperatorSettings) -> ServingLaunch:
    serving = release.spec.serving
    alias = names.served_model_name(release)
    return ServingLaunch(
        model=pod.volume_path(settings, names.artifact_subpath(release)),
        revision=release.spec.version,
        served_model_names=[alias, f"{alias}:{release.spec.version}"],
        max_model_len=serving.max_model_len,
        tensor_parallel_size=max(serving.gpus, 1),
        port=PORT,
        # SIGTERM comes after the preStop sleep; in-flight requests get the rest of the grace period.
        drain_seconds=max(settings.serving_grace_seconds - PRE_STOP_SECONDS - 5, 1),
        extra_args=list(serving.extra_args or []),
    )


def endpoint(release: LegalModelRelease) -> str:
    return f"http://{names.serving_target(release)}.{release.namespace}.svc:{PORT}/v1"


def _probe(period: int, failures: int, timeout: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": HEALTH_PATH, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def _container(release: LegalModelRelease, settings: OperatorSettings) -> dict[str, Any]:
    serving = release.spec.serving
    env: list[dict[str, Any]] = [
        *pod.hub_env(release, settings),
        {"name": "HOME", "value": "/tmp"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
    ]
    env += pod.secret_env(API_KEY_ENV, serving.api_key_secret, settings.default_api_key_secret)
    return {
        "name": CONTAINER,
        "image": serving.image or settings.server_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["twlegal-serve"],
        "args": launch(release, settings).to_argv(),
        "env": env,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "resources": pod.resources(serving.resources, serving.gpus),
        # Loading weights can take many minutes: the startup probe allows for it, so liveness
        # never kills a slow-loading pod; readiness gates traffic on the model being loaded.
        "startupProbe": _probe(10, max(settings.startup_timeout_seconds // 10, 1), 5),
        "readinessProbe": _probe(5, 3, 5),
        "livenessProbe": _probe(30, 5, 10),
        # Give endpoints time to drop the pod before vLLM stops taking requests.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "volumeMounts": [
            {"name": pod.STORAGE_VOLUME, "mountPath": settings.storage_mount_path, "readOnly": True},
            {"name": pod.SHM_VOLUME, "mountPath": "/dev/shm"},
        ],
        "securityContext": pod.container_security_context(),
    }


def deployment(release: LegalModelRelease, settings: OperatorSettings) -> dict[str, Any]:
    target = names.serving_target(release)
    serving = release.spec.serving
    pod_labels = names.labels(release, "serving")
    annotations = {REVISION_ANNOTATION: release.spec.version}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": pod.object_meta(release, target, pod_labels, annotations),
        "spec": {
            "replicas": serving.replicas,
            "selector": {"matchLabels": names.serving_selector(target)},
            # Never fewer ready pods than asked for: a new pod must be ready before an old one goes.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "progressDeadlineSeconds": settings.rollout_deadline_seconds,
            "revisionHistoryLimit": 5,
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        **annotations,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": settings.serving_grace_seconds,
                    "securityContext": pod.pod_security_context(settings),
                    "containers": [_container(release, settings)],
                    "volumes": [
                        pod.storage_volume(release, read_only=True),
                        pod.shm_volume("2Gi"),
                    ],
                    **pod.placement(serving.resources),
                },
            },
        },
    }


def service(release: LegalModelRelease, settings: OperatorSettings) -> dict[str, Any]:
    target = names.serving_target(release)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": pod.object_meta(release, target, names.labels(release, "serving")),
        "spec": {
            "type": "ClusterIP",
            "selector": names.serving_selector(target),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def render(release: LegalModelRelease, settings: OperatorSettings) -> list[dict[str, Any]]:
    if not release.spec.serving.enabled:
        return []
    return [deployment(release, settings), service(release, settings)]
