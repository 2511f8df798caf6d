"""The one module that talks to the Kubernetes API server (official client, server-side apply)."""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from . import metrics
from .api.release import API_VERSION, KIND, PLURAL

FIELD_MANAGER = "twlegal-operator"
REPORTING_CONTROLLER = "twlegal.io/operator"
_PLURALS = {
    "Secret": "secrets",
    "NetworkPolicy": "networkpolicies",
    "ConfigMap": "configmaps",
    "Service": "services",
    "Pod": "pods",
    "Job": "jobs",
    "Deployment": "deployments",
    KIND: PLURAL,
}


def _path(api_version: str, kind: str, namespace: str, name: str | None = None, sub: str = "") -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{_PLURALS[kind]}"
    if name:
        path += f"/{name}"
    return path + (f"/{sub}" if sub else "")


def _resource(path: str) -> str:
    """The resource a request path names: /apis/g/v/namespaces/ns/jobs/x -> jobs; .../x/status -> status."""
    parts = path.strip("/").split("/")
    after = parts[parts.index("namespaces") + 2 :] if "namespaces" in parts else parts[-1:]
    return after[2] if len(after) > 2 else after[0]


def load_client() -> client.ApiClient:
    """From KUBECONFIG / ~/.kube/config, or in-cluster when running in a pod."""
    try:
        config.load_kube_config()
    except config.ConfigException:
        config.load_incluster_config()
    return client.ApiClient()


def current_namespace() -> str:
    """The kubeconfig context's namespace (as kubectl uses it), the pod's own in a cluster, or default."""
    try:
        _, context = config.list_kube_config_contexts()
        return (context or {}).get("context", {}).get("namespace") or "default"
    except config.ConfigException:
        try:
            return Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
        except OSError:
            return "default"


class ChildConflict(Exception):
    """A child's name is taken by an object that is not this owner's (yet): retry once it is gone."""

    def __init__(self, child: str, why: str):
        super().__init__(f"{child} exists and is {why}: waiting until it is gone")
        self.child = child


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None):
        self.api = api_client or load_client()
        self.instance = socket.gethostname()

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Any:
        # A generic request through the official client's transport (auth, TLS, retries). An apply
        # patch goes as JSON text (JSON is YAML); the client serialises a JSON body itself.
        method, url, headers, _, _ = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Accept": accept, "Content-Type": content_type},
            auth_settings=["BearerToken"],
        )
        if body is not None and content_type.endswith("yaml"):
            body = json.dumps(body)
        metrics.API_REQUESTS.labels(verb=method, resource=_resource(path)).inc()
        response = self.api.call_api(method, url, header_params=headers, body=body)
        data = response.read()
        if not 200 <= response.status < 300:
            error = ApiException(status=response.status, reason=response.reason)
            error.body = data.decode(errors="replace") if data else ""
            raise error
        return json.loads(data) if data else None

    def _get(self, path: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", path)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    # --- reading ------------------------------------------------------------------------------
    def get_release(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(_path(API_VERSION, KIND, namespace, name))

    def list_releases(self, namespace: str) -> list[dict[str, Any]]:
        return self._call("GET", _path(API_VERSION, KIND, namespace))["items"]

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(_path(api_version, kind, namespace, name))

    def get_metadata(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Only the object's metadata (PartialObjectMetadata): for a Secret, never its data."""
        try:
            return self._call(
                "GET",
                _path(api_version, kind, namespace, name),
                accept="application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self._call("GET", _path("v1", "Pod", namespace), query=[("labelSelector", selector)])["items"]

    # --- writing ------------------------------------------------------------------------------
    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply under the operator's one field manager."""
        meta = obj["metadata"]
        return self._call(
            "PATCH",
            _path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]),
            body=obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    def create(self, obj: dict[str, Any]) -> bool:
        """Create; False when it exists already and is the same owner's (Jobs are immutable: never
        re-applied). One of the same name that another owner holds, or that is being deleted (an
        earlier release of the same name), raises ChildConflict: it is not this object."""
        meta = obj["metadata"]
        try:
            self._call(
                "POST",
                _path(obj["apiVersion"], obj["kind"], meta["namespace"]),
                body=obj,
                query=[("fieldManager", FIELD_MANAGER)],
            )
            return True
        except ApiException as exc:
            if exc.status != 409:
                raise
        owners = {ref["uid"] for ref in meta.get("ownerReferences") or []}
        existing = self.get_metadata(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        found = (existing or {}).get("metadata") or {}
        theirs = {ref.get("uid") for ref in found.get("ownerReferences") or []}
        if existing is not None and not found.get("deletionTimestamp") and (not owners or owners & theirs):
            return False
        raise ChildConflict(f"{obj['kind']}/{meta['name']}", "being deleted" if found else "owned by another")

    def delete(self, obj: dict[str, Any]) -> None:
        """Delete a child, its pods first (foreground): it is gone only once they are."""
        meta = obj["metadata"]
        try:
            self._call(
                "DELETE",
                _path(obj.get("apiVersion", "batch/v1"), obj.get("kind", "Job"), meta["namespace"], meta["name"]),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"},
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def set_finalizers(self, namespace: str, name: str, finalizers: list[str], resource_version: str) -> dict[str, Any]:
        """Replace the release's finalizers, only if it has not changed since it was read (409 otherwise:
        the next reconcile decides again)."""
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        return self._call(
            "PATCH",
            _path(API_VERSION, KIND, namespace, name),
            body=patch,
            query=[("fieldManager", FIELD_MANAGER)],
            content_type="application/merge-patch+json",
        )

    def apply_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of the status subresource; returns the release as stored."""
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        }
        return self._call(
            "PATCH",
            _path(API_VERSION, KIND, namespace, name, "status"),
            body=body,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    def emit_event(self, release: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = release["metadata"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            # client-go's naming: <object>.<hex nanoseconds>
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}", "namespace": meta["namespace"]},
            "eventTime": now,
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self.instance[:128],
            "action": reason[:128],
            "reason": reason[:128],
            "note": message[:1024],
            "type": type_,
            "regarding": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
        }
        self._call("POST", f"/apis/events.k8s.io/v1/namespaces/{meta['namespace']}/events", body=event)


__all__ = ["FIELD_MANAGER", "ChildConflict", "Kube", "current_namespace", "load_client"]
