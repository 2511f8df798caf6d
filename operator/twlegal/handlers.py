"""kopf wiring: every event that could change a release's state leads to the same reconcile().

- a release is created, changed, or listed again on start-up (resume)  -> reconcile it
- a Job it owns changes                                                 -> reconcile its release
- a serving Deployment changes                                          -> reconcile every release of that target
- every `resync_seconds`                                                -> reconcile releases still in flight
Nothing here decides anything; see policies/.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import kopf
from prometheus_client import start_http_server

from .api.release import GROUP, PLURAL, VERSION, LegalModelRelease
from .api.status import TERMINAL_PHASES
from .kube import Kube
from .policies import Peer
from .reconciler import Reconciler
from .render import names
from .render.settings import OperatorSettings

log = logging.getLogger("twlegal.operator")
MANAGED = {"app.kubernetes.io/managed-by": names.MANAGED_BY}
_state: dict[str, Any] = {}


def reconciler() -> Reconciler:
    return _state["reconciler"]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our own annotation prefix and finalizer name, never kopf's shared defaults. The operator
    # needs no finalizer (nothing outside Kubernetes to clean up) and registers no deletion handler.
    settings.persistence.finalizer = f"{names.ANNOTATION_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True
    operator_settings = OperatorSettings.from_env(os.environ)
    settings.execution.max_workers = operator_settings.workers
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    # One line per handler run is noise at scale; the reconciler logs each phase transition.
    logging.getLogger("kopf.objects").setLevel(operator_settings.kopf_log_level)
    _state["reconciler"] = Reconciler(Kube(), operator_settings, peers=_peers)
    if operator_settings.metrics_port:
        start_http_server(operator_settings.metrics_port)
    stop = threading.Event()
    _state["stop"] = stop
    threading.Thread(
        target=_resync_loop, args=(stop, operator_settings.resync_seconds), name="twlegal-resync", daemon=True
    ).start()
    log.info("twlegal operator started: %s", operator_settings.model_dump())


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    if "stop" in _state:
        _state["stop"].set()


def _resync_loop(stop: threading.Event, interval: float) -> None:
    """A safety net for missed events; also what notices a Job deleted by hand."""
    while not stop.wait(interval):
        for (namespace, name), phase in list(reconciler().phases.items()):
            if phase in TERMINAL_PHASES:
                continue
            try:
                reconciler().reconcile(namespace, name)
            except Exception:
                log.exception("resync of %s/%s failed", namespace, name)


def _target(spec: kopf.Spec) -> str:
    return spec.get("serving", {}).get("target") or names.default_target(spec.get("model", ""))


def _namespaced(namespace: str | None) -> str:
    # Releases, Jobs and Deployments are namespaced: kopf always names the namespace.
    if namespace is None:
        raise kopf.PermanentError("a namespaced object arrived without a namespace")
    return namespace


@kopf.index(GROUP, VERSION, PLURAL)
def releases_by_target(
    namespace: str | None, spec: kopf.Spec, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], Peer]:
    """(namespace, target) -> what serving decisions need of each release, kept in memory so a
    reconcile never lists every release of a namespace."""
    return {(_namespaced(namespace), _target(spec)): Peer.of(LegalModelRelease.from_object(dict(body)))}


def _index(kwargs: dict[str, Any]) -> kopf.Index[tuple[str, str], Peer]:
    """The index above: kopf hands every handler its indices as keyword arguments by name."""
    index: kopf.Index[tuple[str, str], Peer] = kwargs["releases_by_target"]
    return index


def _peers(namespace: str, target: str) -> list[Peer] | None:
    index = _state.get("index")
    return None if index is None else list(index.get((namespace, target), []))


@kopf.on.event(GROUP, VERSION, PLURAL)
def release_event(event: kopf.RawEvent, namespace: str | None, name: str, spec: kopf.Spec, **kwargs: Any) -> None:
    namespace = _namespaced(namespace)
    _state["index"] = _index(kwargs)  # a live view; the reconciler and the resync loop read it
    if event.get("type") == "DELETED":
        reconciler().forget(namespace, name)
        return
    before = reconciler().phases.get((namespace, name))
    phase = reconciler().reconcile(namespace, name)
    if phase != before:
        # A release that starts (or stops) serving changes what the other releases of its
        # target should do: tell them now rather than at the next resync.
        for peer in _peers(namespace, _target(spec)) or []:
            if peer.name != name:
                reconciler().reconcile(namespace, peer.name)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
def job_event(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    release = labels.get(names.RELEASE_LABEL)
    if release:
        reconciler().reconcile(_namespaced(namespace), release)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
def deployment_event(namespace: str | None, labels: kopf.Labels, **kwargs: Any) -> None:
    namespace = _namespaced(namespace)
    releases_by_target = _state["index"] = _index(kwargs)
    target = labels.get(names.TARGET_LABEL, "")
    for peer in list(releases_by_target.get((namespace, target), [])):
        reconciler().reconcile(namespace, peer.name)


def run(*, namespaces: list[str] | None = None, liveness_port: int = 8081) -> None:
    """Run the operator until interrupted (cluster-wide unless namespaces are given)."""
    kopf.configure(verbose=False)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces or (),
        standalone=True,
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None,
    )
