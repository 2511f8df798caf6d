"""Pieces shared by every pod a release runs: volumes, security context, placement, hub access."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from ..api.common import SecretKeyRef
from ..api.release import API_VERSION, KIND, LegalModelRelease
from ..api.spec import ComputeResources
from ..contracts import progress
from ..contracts.termination import DEFAULT_TERMINATION_LOG
from . import names
from .settings import OperatorSettings

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server

STORAGE_VOLUME = "models"
CONFIG_VOLUME = "config"
SHM_VOLUME = "dshm"


def owner_reference(release: LegalModelRelease, *, controller: bool = True) -> dict[str, Any]:
    assert release.metadata.uid, "only a release stored in a cluster can own objects"
    return release_reference(release.name, release.metadata.uid, controller=controller)


def release_reference(name: str, uid: str, *, controller: bool = False) -> dict[str, Any]:
    """An owner reference to a release; blockOwnerDeletion, so foreground deletion waits for the child
    (which needs `update` on legalmodelreleases/finalizers where OwnerReferencesPermissionEnforcement is on)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def object_meta(
    release: LegalModelRelease, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """metadata of a child; owner references only when the release exists in a cluster (has a uid)."""
    meta: dict[str, Any] = {"name": name, "namespace": release.namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    if release.metadata.uid:
        meta["ownerReferences"] = [owner_reference(release)]
    return meta


def pod_security_context(settings: OperatorSettings) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "runAsGroup": settings.run_as_user,
        "fsGroup": settings.run_as_user,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Meets the "restricted" Pod Security Standard."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def claim_volume(claim_name: str, *, read_only: bool = False) -> dict[str, Any]:
    claim: dict[str, Any] = {"claimName": claim_name}
    if read_only:
        claim["readOnly"] = True
    return {"name": STORAGE_VOLUME, "persistentVolumeClaim": claim}


def shm_volume(size: int | str) -> dict[str, Any]:
    return {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": str(size)}}


def resources(spec: ComputeResources, gpus: int) -> dict[str, Any]:
    """Requests equal limits: training and serving pods should be Guaranteed, never throttled."""
    amounts: dict[str, Any] = {}
    if spec.cpu is not None:
        amounts["cpu"] = str(spec.cpu)
    if spec.memory is not None:
        amounts["memory"] = str(spec.memory)
    if gpus:
        amounts[spec.gpu_resource_name] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def placement(spec: ComputeResources) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec.node_selector:
        out["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        out["tolerations"] = [t.to_wire() for t in spec.tolerations]
    return out


def secret_env(name: str, ref: SecretKeyRef | None, default: str | None) -> list[dict[str, Any]]:
    """An env var from the release's Secret, else from the operator's default "name/key"."""
    if ref is not None:
        secret, key = ref.name, ref.key
    elif default:
        secret, key = default.split("/", 1)
    else:
        return []
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}]


def hub_env(release: LegalModelRelease, settings: OperatorSettings, *, reads_hub: bool) -> list[dict[str, Any]]:
    """Hub cache on the volume (survives retries), endpoint, offline mode; the token only in pods
    that read the hub (least credentials: a pod loading from the volume never holds it)."""
    hub = release.spec.hub
    env: list[dict[str, Any]] = [
        {"name": "HF_HOME", "value": f"{settings.storage_mount_path}/{settings.hub_cache_subpath}"},
    ]
    if reads_hub and not hub.offline:
        env += secret_env("HF_TOKEN", hub.token_secret, settings.default_hub_token_secret)
    if hub.endpoint:
        env.append({"name": "HF_ENDPOINT", "value": hub.endpoint})
    if hub.offline:
        env += [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "HF_DATASETS_OFFLINE", "value": "1"}]
    return env


def volume_path(settings: OperatorSettings, subpath: str) -> str:
    return f"{settings.storage_mount_path}/{subpath}"


# No pod a release runs talks to the API server: none gets a service-account token.
NO_API_TOKEN = {"automountServiceAccountToken": False}
# A Job container that reports its result through the termination message (the log tail when it
# crashed before writing one).
REPORTS_RESULT = {
    "terminationMessagePath": DEFAULT_TERMINATION_LOG,
    "terminationMessagePolicy": "FallbackToLogsOnError",
}


def hub_port(release: LegalModelRelease) -> int:
    endpoint = urlparse(release.spec.hub.endpoint or "https://huggingface.co")
    return endpoint.port or (80 if endpoint.scheme == "http" else 443)


# A stage pod serves its progress (contracts/progress.py) on a port of its own, which Prometheus
# finds by the annotations serving pods carry too.
PROGRESS_PORTS = {"ports": [{"name": "metrics", "containerPort": progress.PORT, "protocol": "TCP"}]}
SCRAPE_PROGRESS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(progress.PORT),
    "prometheus.io/path": progress.PATH,
}


def job_network_policy(
    release: LegalModelRelease, settings: OperatorSettings, name: str, component: str, *, reads_hub: bool
) -> dict[str, Any]:
    """A training or evaluation pod takes no connections but the operator's (and the monitoring
    namespace's) on its progress port, and reaches out only to the hub (and DNS) when it loads from
    it; otherwise it has no network at all. Enforced where the CNI implements NetworkPolicy (Calico,
    Cilium, ...); the plain bridge plugin ignores it. Without TWLEGAL_OPERATOR_NAMESPACE (an operator
    outside the cluster) nothing may connect, and status shows no live progress where it is enforced."""
    readers = [ns for ns in (settings.operator_namespace, settings.monitoring_namespace) if ns]
    ingress = (
        [
            {
                "from": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: ns}}} for ns in readers],
                "ports": [{"protocol": "TCP", "port": progress.PORT}],
            }
        ]
        if readers
        else []
    )
    egress: list[dict[str, Any]] = []
    if reads_hub and not release.spec.hub.offline:
        egress = [
            {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            {"ports": [{"protocol": "TCP", "port": hub_port(release)}]},
        ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(release, name, names.labels(release, component)),
        "spec": {
            "podSelector": {"matchLabels": {names.RELEASE_LABEL: release.name, names.COMPONENT_LABEL: component}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }
