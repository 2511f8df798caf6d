"""The serving stage: one vLLM Deployment + Service per serving target, pinned to a release."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api.release import LegalModelRelease
from ..api.spec import AllowFrom
from ..contracts.serving import API_KEY_ENV, PORT, PREVIOUS_API_KEY_ENV, ServingLaunch
from . import names, pod, storage
from .settings import OperatorSettings

CONTAINER = "vllm"
NAMESPACE_NAME_LABEL = pod.NAMESPACE_NAME_LABEL
PRE_STOP_SECONDS = 10
REVISION_ANNOTATION = f"{names.ANNOTATION_PREFIX}/revision"
# The key Secret's resourceVersion: a rotated key changes the pod template, so the pods roll.
KEY_VERSION_ANNOTATION = f"{names.ANNOTATION_PREFIX}/api-key-version"
HEALTH_PATH = "/health"


@dataclass(frozen=True)
class KeyRef:
    """Where a target's API key lives; `generated`: the operator creates the Secret when absent."""

    secret: str
    key: str
    generated: bool = False

    def __str__(self) -> str:
        return f"{self.secret}/{self.key}"


def api_key_ref(release: LegalModelRelease, settings: OperatorSettings) -> KeyRef | None:
    """The release's Secret, else the operator's default, else one generated for the target; None
    only with `auth: none`, the explicit opt-out."""
    serving = release.spec.serving
    if serving.auth == "none":
        return None
    if serving.api_key_secret is not None:
        return KeyRef(serving.api_key_secret.name, serving.api_key_secret.key)
    if settings.default_api_key_secret:
        secret, key = settings.default_api_key_secret.split("/", 1)
        return KeyRef(secret, key)
    return KeyRef(names.generated_api_key_secret(names.serving_target(release)), names.GENERATED_API_KEY, True)


def generated_key_secret(release: LegalModelRelease, ref: KeyRef, value: str) -> dict[str, Any]:
    """The Secret the operator creates (once) for a target that names none. It has no owner: it
    belongs to the target, not to one release, so a later release of the target keeps the key its
    clients hold; deleting it by hand makes the operator generate a new one."""
    labels = {k: v for k, v in names.labels(release, "serving").items() if k != names.RELEASE_LABEL}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": ref.secret, "namespace": release.namespace, "labels": labels},
        "type": "Opaque",
        "stringData": {ref.key: value},
    }


def launch(release: LegalModelRelease, settings: OperatorSettings) -> ServingLaunch:
    serving = release.spec.serving
    alias = names.served_model_name(release)
    return ServingLaunch(
        model=storage.artifact_dir(release, settings),
        revision=release.spec.version,
        # The weights this release published, not just any of its version: the launcher refuses others.
        checksum=release.status.artifact.checksum if release.status and release.status.artifact else None,
        served_model_names=[alias, f"{alias}:{release.spec.version}"],
        max_model_len=serving.max_model_len,
        tensor_parallel_size=max(serving.gpus, 1),
        port=PORT,
        # SIGTERM comes after the preStop sleep; in-flight requests get the rest of the grace period.
        drain_seconds=max(settings.serving_grace_seconds - PRE_STOP_SECONDS - 5, 1),
        extra_args=list(serving.extra_args or []),
        auth=serving.auth,
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


def key_env(ref: KeyRef | None) -> list[dict[str, Any]]:
    """The key (and, during a rotation, the previous one) from the Secret into the environment:
    never on the command line, where `ps` and the pod spec would show it."""
    if ref is None:
        return []
    previous = names.previous_key(ref.key)
    return [
        {"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": ref.secret, "key": ref.key}}},
        {
            "name": PREVIOUS_API_KEY_ENV,
            "valueFrom": {"secretKeyRef": {"name": ref.secret, "key": previous, "optional": True}},
        },
    ]


def _container(release: LegalModelRelease, settings: OperatorSettings) -> dict[str, Any]:
    serving = release.spec.serving
    # No hub variables: serving loads the published weights from the volume, never from a hub.
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
        *key_env(api_key_ref(release, settings)),
    ]
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


def deployment(
    release: LegalModelRelease, settings: OperatorSettings, key_version: str | None = None
) -> dict[str, Any]:
    target = names.serving_target(release)
    serving = release.spec.serving
    pod_labels = names.labels(release, "serving")
    annotations = {REVISION_ANNOTATION: release.spec.version}
    pod_annotations = {**annotations, **({KEY_VERSION_ANNOTATION: key_version} if key_version else {})}
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
                        **pod_annotations,
                        # /metrics needs the key too: scrape with it as a bearer token.
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    **pod.NO_API_TOKEN,
                    "terminationGracePeriodSeconds": settings.serving_grace_seconds,
                    "securityContext": pod.pod_security_context(settings),
                    "containers": [_container(release, settings)],
                    "volumes": [
                        storage.storage_volume(release, settings, read_only=True),
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


def _peer(source: AllowFrom) -> dict[str, Any]:
    peer: dict[str, Any] = {}
    if source.namespace:
        peer["namespaceSelector"] = {"matchLabels": {NAMESPACE_NAME_LABEL: source.namespace}}
    peer["podSelector"] = {"matchLabels": dict(source.pod_selector or {})}
    return peer


def network_policy(release: LegalModelRelease, settings: OperatorSettings) -> dict[str, Any]:
    """Who may reach the serving port: the sources the release names (default: pods of its own
    namespace) and the monitoring namespace (for /metrics, which needs the key as well). Serving
    pods reach out to nobody. A NetworkPolicy works on ports, not paths: the key guards the routes."""
    target = names.serving_target(release)
    sources = [_peer(s) for s in release.spec.serving.allow_from or []] or [{"podSelector": {}}]
    if settings.monitoring_namespace:
        sources.append({"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: settings.monitoring_namespace}}})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": pod.object_meta(release, target, names.labels(release, "serving")),
        "spec": {
            "podSelector": {"matchLabels": names.serving_selector(target)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": sources, "ports": [{"protocol": "TCP", "port": PORT}]}],
            "egress": [],
        },
    }


def render(
    release: LegalModelRelease, settings: OperatorSettings, key_version: str | None = None
) -> list[dict[str, Any]]:
    if not release.spec.serving.enabled:
        return []
    return [
        deployment(release, settings, key_version),
        service(release, settings),
        network_policy(release, settings),
    ]
