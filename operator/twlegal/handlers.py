"""kopf wiring: every event that could change a release's state leads to the same reconcile().

- a release is created, its spec changes, or it is there at start-up -> reconcile it, in kopf's
  change-detecting handlers: a reconcile that fails (an API server restart, a 500, a timeout) is
  retried by kopf with exponential backoff until it succeeds
- a release is being deleted, or is gone                              -> reconcile it, and the
  release that takes its target over
- a Job, or a training or evaluation pod, it owns changes              -> reconcile its release
- a serving Deployment changes                                         -> reconcile the releases it
  concerns (pinned, remembered as previous, rolling out or serving); never every release of a target
- a release's phase changes in a way its target's other releases care about -> reconcile those
- every second, the releases whose event-driven reconcile failed (backoff due) and, every
  `resync_seconds`, the releases still in flight (start deadlines, missed events). Settled releases
  (serving, superseded, finished) are watched through their Deployment and Jobs, not resynced; a
  serving release is reconciled then only if its key Secret changed (a rotation: one metadata GET
  per Secret, since the operator may not watch Secrets).
Why not kopf timers for that: kopf puts a finalizer on every object that has a timer or a daemon,
so no release could be deleted while the operator is down or uninstalled.
Nothing here decides anything; see policies/.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import kopf
from prometheus_client import start_http_server
from pydantic import ValidationError

from .api.release import GROUP, PLURAL, VERSION, LegalModelRelease
from .api.status import TERMINAL_PHASES, Phase
from .kube import ChildConflict, Kube
from .policies import Peer, StoragePeer, children
from .policies.serving import PREVIOUS_RELEASE_ANNOTATION
from .reconciler import Reconciler
from .render import names
from .render.settings import OperatorSettings
from .retries import Retries

log = logging.getLogger("twlegal.operator")
MANAGED = {"app.kubernetes.io/managed-by": names.MANAGED_BY}
STAGE_COMPONENTS = ("training", "evaluation")
# Phases a release settles in: nothing changes them but an event (the resync leaves them alone, but
# for a serving release's key Secret, which the operator may not watch).
SETTLED = frozenset({Phase.SERVING, Phase.SUPERSEDED, Phase.COMPLETED, Phase.FAILED, Phase.REJECTED, Phase.ROLLED_BACK})
# Phases a release enters that the other releases of its target must hear about at once: a new one
# rolls out or serves (the serving one steps aside), one is rolled back (the one before pins again).
TOLD_TO_PEERS = frozenset({Phase.ROLLING_OUT, Phase.SERVING, Phase.ROLLED_BACK})
_state: dict[str, Any] = {}


def reconciler() -> Reconciler:
    return _state["reconciler"]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our own annotation prefix and finalizer name, never kopf's shared defaults. No kopf finalizer:
    # the operator registers no deletion handler, timer or daemon (its own reclaim finalizer, for
    # reclaimPolicy Delete, is set by the reconciler).
    settings.persistence.finalizer = f"{names.ANNOTATION_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True  # one active replica: the Lease decides which (leader.py)
    operator_settings = OperatorSettings.from_env(os.environ)
    settings.execution.max_workers = operator_settings.workers
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    # One line per handler run is noise at scale; the reconciler logs each phase transition.
    logging.getLogger("kopf.objects").setLevel(operator_settings.kopf_log_level)
    _state["settings"] = operator_settings
    _state["reconciler"] = Reconciler(Kube(), operator_settings, peers=_peers, storage_peers=_storage_peers)
    _state["retries"] = Retries(resync_seconds=operator_settings.resync_seconds)
    if operator_settings.metrics_port:
        start_http_server(operator_settings.metrics_port)
    stop = threading.Event()
    _state["stop"] = stop
    threading.Thread(target=_resync_loop, args=(stop,), name="twlegal-resync", daemon=True).start()
    log.info("twlegal operator started: %s", operator_settings.model_dump())


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    if "stop" in _state:
        _state["stop"].set()


def _namespaced(namespace: str | None) -> str:
    # Releases, Jobs and Deployments are namespaced: kopf always names the namespace.
    if namespace is None:
        raise kopf.PermanentError("a namespaced object arrived without a namespace")
    return namespace


def _target(spec: kopf.Spec) -> str:
    return spec.get("serving", {}).get("target") or names.default_target(spec.get("model", ""))


# --- indices: what a reconcile needs of the other releases, kept in memory ------------------------


@kopf.index(GROUP, VERSION, PLURAL)
def releases_by_target(
    namespace: str | None, spec: kopf.Spec, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], Peer]:
    """(namespace, target) -> what serving decisions need of each release."""
    try:
        peer = Peer.of(LegalModelRelease.from_object(dict(body)))
    except ValidationError:
        return {}  # an unreadable release serves nothing; its own reconcile says why
    return {(_namespaced(namespace), _target(spec)): peer}


@kopf.index(GROUP, VERSION, PLURAL)
def releases_by_namespace(namespace: str | None, body: kopf.Body, **_: Any) -> dict[str, StoragePeer]:
    """namespace -> each release's directories, for the overlap check before a training Job."""
    try:
        return {_namespaced(namespace): StoragePeer.of(LegalModelRelease.from_object(dict(body)), _state["settings"])}
    except ValidationError:
        return {}


def _remember_indices(kwargs: dict[str, Any]) -> None:
    """kopf hands every handler its indices by name: keep live views for the reconciler."""
    _state["by_target"] = kwargs["releases_by_target"]
    _state["by_namespace"] = kwargs["releases_by_namespace"]


def _peers(namespace: str, target: str) -> list[Peer] | None:
    index = _state.get("by_target")
    return None if index is None else list(index.get((namespace, target), []))


def _storage_peers(namespace: str) -> list[StoragePeer] | None:
    index = _state.get("by_namespace")
    return None if index is None else list(index.get(namespace, []))


# --- reconciles -----------------------------------------------------------------------------------


def _reconcile(
    namespace: str, name: str, target: str | None = None, *, resync_retries: bool = True
) -> Exception | None:
    """One reconcile. A failure is returned (and retried with backoff by the resync loop, unless kopf
    retries it); a phase change the target's other releases care about reaches them at once."""
    key = (namespace, name)
    try:
        outcome = reconciler().reconcile(namespace, name)
    except Exception as exc:  # noqa: BLE001 - any failure: retried with backoff, never lost
        if resync_retries:
            _state["retries"].failed(key, exc)
        level = logging.INFO if isinstance(exc, ChildConflict) else logging.WARNING
        log.log(level, "reconcile of %s/%s failed (retried with backoff): %s", namespace, name, exc)
        return exc
    _state["retries"].succeeded(key)
    if outcome.changed and outcome.phase in TOLD_TO_PEERS and target is not None:
        _tell_peers(namespace, target, name)
    return None


def _tell_peers(namespace: str, target: str, changed: str) -> None:
    """The releases of a target that may have to act on `changed`'s news: the ones rolling out or
    serving, and the newest that could serve (it takes over when `changed` stops). Superseded ones
    behind it need no news: nothing changed for them."""
    peers = [p for p in _peers(namespace, target) or [] if p.name != changed and not p.deleting]
    told = {p.name for p in peers if p.phase in (Phase.ROLLING_OUT, Phase.SERVING)}
    contenders = [p for p in peers if p.passed and p.phase not in TERMINAL_PHASES]
    if contenders:
        told.add(max(contenders, key=Peer.order).name)
    for name in sorted(told):
        _reconcile(namespace, name)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def release_changed(namespace: str | None, name: str, spec: kopf.Spec, retry: int, **kwargs: Any) -> None:
    """kopf retries these handlers until they succeed, with a backoff that doubles (1 s, 2 s, ... up
    to the resync interval): a first reconcile that fails is never left without a retry."""
    _remember_indices(kwargs)
    error = _reconcile(_namespaced(namespace), name, _target(spec), resync_retries=False)
    if error is not None:
        raise kopf.TemporaryError(str(error), delay=_state["retries"].delay(retry)) from error


@kopf.on.event(GROUP, VERSION, PLURAL)
def release_event(
    event: kopf.RawEvent, namespace: str | None, name: str, spec: kopf.Spec, meta: kopf.Meta, **kwargs: Any
) -> None:
    """What kopf's change-detecting handlers do not see: a deletion starting (our reclaim finalizer)
    and a release gone. Either way the target may need another release to serve it."""
    namespace = _namespaced(namespace)
    _remember_indices(kwargs)
    if event.get("type") == "DELETED":
        reconciler().forget(namespace, name)
        _state["retries"].succeeded((namespace, name))
        _tell_peers(namespace, _target(spec), name)
    elif meta.get("deletionTimestamp"):
        _reconcile(namespace, name)
        _tell_peers(namespace, _target(spec), name)


def _job_has_status(status: kopf.Status, **_: Any) -> bool:
    # A Job just created has no status: the reconcile that created it knows all it says.
    return bool(status)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED, when=_job_has_status)
def job_event(namespace: str | None, labels: kopf.Labels, **kwargs: Any) -> None:
    namespace = _namespaced(namespace)
    _remember_indices(kwargs)
    release = labels.get(names.RELEASE_LABEL)
    if not release:
        return
    if labels.get(names.COMPONENT_LABEL) in STAGE_COMPONENTS and _phase(namespace, labels) in SETTLED:
        return  # a settled release's status holds its stages' outcomes (kopf lists every Job at start-up)
    _reconcile(namespace, release)


def _phase(namespace: str, labels: kopf.Labels) -> str | None:
    """A release's phase as the index holds it."""
    peers = _peers(namespace, labels.get(names.TARGET_LABEL, "")) or []
    return next((p.phase for p in peers if p.name == labels.get(names.RELEASE_LABEL)), None)


def _waiting_stage_pod(labels: kopf.Labels, status: kopf.Status, body: kopf.Body, **_: Any) -> bool:
    # Only a pod not running yet can tell why it does not start, and only once its status names a
    # reason (a pod just created or still pulling tells nothing); the rest reach us through the Job.
    return (
        labels.get(names.COMPONENT_LABEL) in STAGE_COMPONENTS
        and status.get("phase") in (None, "Pending")
        and children.tells_why_not_started(dict(body))
    )


@kopf.on.event("", "v1", "pods", labels=MANAGED, when=_waiting_stage_pod)
def stage_pod_event(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    """A training or evaluation pod that cannot start (image, Secret, no node) says so in its own
    status, not its Job's: its release reads why."""
    release = labels.get(names.RELEASE_LABEL)
    if release:
        _reconcile(_namespaced(namespace), release)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
def deployment_event(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **kwargs: Any) -> None:
    namespace = _namespaced(namespace)
    _remember_indices(kwargs)
    target = labels.get(names.TARGET_LABEL, "")
    deployment = dict(body)
    concerned = {
        children.template_label(deployment, names.RELEASE_LABEL),
        children.annotation(deployment, PREVIOUS_RELEASE_ANNOTATION),
    }
    for peer in _peers(namespace, target) or []:
        if peer.name in concerned or peer.phase in (Phase.ROLLING_OUT, Phase.SERVING):
            _reconcile(namespace, peer.name)


# --- the resync loop ------------------------------------------------------------------------------


def _resync_loop(stop: threading.Event) -> None:
    """Failed reconciles whose backoff is due, and in-flight releases every resync_seconds, over
    every release the index holds (including ones that never reconciled)."""
    while not stop.wait(1.0):
        index = _state.get("by_target")
        if index is None:
            continue
        releases = [(ns, p) for (ns, _target), peers in list(index.items()) for p in peers]
        due = _state["retries"].due(releases, settled=SETTLED)
        for namespace, peer in due.releases:
            _reconcile(namespace, peer.name)
        if due.resync:
            serving = [(ns, p.name) for ns, p in releases if p.phase == Phase.SERVING]
            for namespace, name in reconciler().rotated_keys(serving):
                _reconcile(namespace, name)


def run(
    *, namespaces: list[str] | None = None, liveness_port: int = 8081, stop_flag: threading.Event | None = None
) -> None:
    """Run the operator until interrupted or `stop_flag` is set (cluster-wide unless namespaces are given)."""
    kopf.configure(verbose=False)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces or (),
        standalone=True,
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None,
        stop_flag=stop_flag,
    )
