"""kopf wiring: every event that could change a release's state puts it on the work queue
(workqueue.py), whose workers run the same reconcile(). Events about one release while it waits
are one reconcile; a reconcile that fails (an API server restart, a 500, a timeout) comes back
after a doubling backoff until it succeeds. What puts a release on the queue:
  - it is there at start-up, created, its spec changes (its generation), it is being deleted or its
    finalizers change; not its status alone (the operator's own writes) nor kopf's annotations
    (kopf's change-detecting handlers would write one onto every release and wait for its event)
  - it is gone: the release that takes its target over
  - a Job it owns has news (its status), or one of its Jobs' pods cannot start (it says why)
  - a serving Deployment changes: the releases it concerns (pinned, remembered as previous,
    rolling out or serving); never every release of a target
  - a release's phase changes in a way its target's other releases care about: those
  - every `progress_seconds` (15), the releases that train or evaluate: their pod's progress
  - every `resync_seconds`, the releases still in flight (a start deadline passing, a stage pod that
    cannot start, a missed event). Settled releases (serving, superseded, finished) are watched
    through their Deployment and Jobs, not resynced; a serving release is reconciled then only if
    its key Secret changed (a rotation: one metadata GET per Secret, since the operator may not
    watch Secrets).
Why not kopf timers or daemons for the resync: kopf puts a finalizer on every object that has one,
so no release could be deleted while the operator is down or uninstalled. Jobs, Deployments and
training and evaluation pods are watched with a label selector (the API server sends only the
operator's own); the Jobs and Deployments are kept in memory with the releases (kopf indices): a
reconcile reads them there, not from the API server (observe.py).
Nothing here decides anything; see policies/.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import kopf
from prometheus_client import start_http_server
from pydantic import ValidationError

from . import metrics
from .api.release import GROUP, KIND, PLURAL, VERSION, LegalModelRelease
from .api.status import TERMINAL_PHASES, Phase
from .kube import ChildConflict, Kube
from .policies import Peer, StoragePeer, children
from .policies.serving import PREVIOUS_RELEASE_ANNOTATION
from .reconciler import Reconciler
from .render import names
from .render.settings import OperatorSettings
from .workqueue import Key, WorkQueue

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set by the Job controller on its pods

log = logging.getLogger("twlegal.operator")
MANAGED = {"app.kubernetes.io/managed-by": names.MANAGED_BY}
# Watched server-side filtered: the API server sends only the operator's own Jobs and Deployments.
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={names.MANAGED_BY}"
STAGE_COMPONENTS = ("training", "evaluation")
WATCHED = {
    ("batch", "v1", "jobs"): MANAGED_SELECTOR,
    ("apps", "v1", "deployments"): MANAGED_SELECTOR,
    ("", "v1", "pods"): f"{MANAGED_SELECTOR},{names.COMPONENT_LABEL} in ({','.join(STAGE_COMPONENTS)})",
}
# Phases a release settles in: nothing changes them but an event (the resync leaves them alone, but
# for a serving release's key Secret, which the operator may not watch).
SETTLED = frozenset({Phase.SERVING, Phase.SUPERSEDED, Phase.COMPLETED, Phase.FAILED, Phase.REJECTED, Phase.ROLLED_BACK})
# Phases whose pod reports progress, read every progress_seconds.
RUNNING_STAGES = frozenset({Phase.TRAINING, Phase.EVALUATING})
# Phases a release enters that the other releases of its target must hear about at once: a new one
# rolls out or serves (the serving one steps aside), one is rolled back (the one before pins again).
TOLD_TO_PEERS = frozenset({Phase.ROLLING_OUT, Phase.SERVING, Phase.ROLLED_BACK})
_state: dict[str, Any] = {}


def reconciler() -> Reconciler:
    return _state["reconciler"]


def queue() -> WorkQueue:
    return _state["queue"]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our own finalizer name, never kopf's shared default. No kopf finalizer is ever set: the
    # operator registers no deletion handler, timer or daemon (its own reclaim finalizer, for
    # reclaimPolicy Delete, is set by the reconciler), and no change-detecting handler, so kopf
    # writes nothing onto a release.
    settings.persistence.finalizer = f"{names.ANNOTATION_PREFIX}/finalizer"
    settings.persistence.diffbase_storage = _NoDiffBase()
    for resource, selector in WATCHED.items():
        settings.watching.label_selectors[resource] = selector
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True  # one active replica: the Lease decides which (leader.py)
    operator_settings = OperatorSettings.from_env(os.environ)
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    # One line per handler run is noise at scale; the reconciler logs each phase transition.
    logging.getLogger("kopf.objects").setLevel(operator_settings.kopf_log_level)
    _state["settings"] = operator_settings
    _state["reconciler"] = Reconciler(
        Kube(), operator_settings, peers=_peers, storage_peers=_storage_peers, cache=_IndexCache()
    )
    _state["queue"] = WorkQueue(max_seconds=operator_settings.resync_seconds)
    if operator_settings.metrics_port:
        start_http_server(operator_settings.metrics_port)
    stop = threading.Event()
    _state["stop"] = stop
    for i in range(operator_settings.workers):
        threading.Thread(target=_work, name=f"twlegal-worker-{i}", daemon=True).start()
    threading.Thread(target=_resync_loop, args=(stop,), name="twlegal-resync", daemon=True).start()
    log.info("twlegal operator started: %s", operator_settings.model_dump())


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    if "stop" in _state:
        _state["stop"].set()
        queue().close()


class _NoDiffBase(kopf.DiffBaseStorage):
    """kopf builds the "essence" of every event it processes (a deep copy of the object) to diff it
    for change-detecting handlers. The operator registers none, so the diff is never read, and the
    copies were a fifth of its CPU with 200 releases applied at once: none is built."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def _namespaced(namespace: str | None) -> str:
    # Releases, Jobs and Deployments are namespaced: kopf always names the namespace.
    if namespace is None:
        raise kopf.PermanentError("a namespaced object arrived without a namespace")
    return namespace


def _target(spec: kopf.Spec) -> str:
    return spec.get("serving", {}).get("target") or names.default_target(spec.get("model", ""))


# --- indices: what a reconcile needs of the other releases, kept in memory ------------------------


# Indexers are coroutines: kopf would run a plain function on its executor, a thread hop per index
# and event. uid -> (resourceVersion, the release), so the indices parse an event once.
_parsed: dict[str, tuple[str, LegalModelRelease | None]] = {}


def _parse(body: kopf.Body) -> LegalModelRelease | None:
    """The release of an event, parsed once for every index (None: unreadable; its own reconcile
    says why)."""
    meta = body.get("metadata", {})
    uid, version = meta.get("uid", ""), meta.get("resourceVersion", "")
    known = _parsed.get(uid)
    if known is not None and known[0] == version:
        return known[1]
    try:
        release: LegalModelRelease | None = LegalModelRelease.from_object(dict(body))
    except ValidationError:
        release = None
    _parsed[uid] = (version, release)
    return release


@kopf.index(GROUP, VERSION, PLURAL)
async def releases_by_target(namespace: str | None, spec: kopf.Spec, body: kopf.Body, **_: Any) -> dict[Key, Peer]:
    """(namespace, target) -> what serving decisions need of each release."""
    release = _parse(body)
    return {} if release is None else {(_namespaced(namespace), _target(spec)): Peer.of(release)}


@kopf.index(GROUP, VERSION, PLURAL)
async def releases_by_namespace(namespace: str | None, body: kopf.Body, **_: Any) -> dict[str, StoragePeer]:
    """namespace -> each release's directories, for the overlap check before a training Job."""
    release = _parse(body)
    return {} if release is None else {_namespaced(namespace): StoragePeer.of(release, _state["settings"])}


@kopf.index(GROUP, VERSION, PLURAL)
async def release_objects(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    """(namespace, name) -> the release as last watched: what a reconcile reads (observe.py)."""
    return {(_namespaced(namespace), name): dict(body)}


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
async def job_objects(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(_namespaced(namespace), name): dict(body)}


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
async def deployment_objects(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]]:
    return {(_namespaced(namespace), name): dict(body)}


@kopf.index("", "v1", "pods", labels=MANAGED)
async def stage_pods(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Key, dict[str, Any]]:
    """(namespace, Job name) -> its pods (the watch holds only training and evaluation pods)."""
    job = labels.get(JOB_NAME_LABEL)
    return {(_namespaced(namespace), job): dict(body)} if job else {}


_INDICES = {"by_target": "releases_by_target", "by_namespace": "releases_by_namespace"}
_CACHES = {KIND: "release_objects", "Job": "job_objects", "Deployment": "deployment_objects", "Pod": "stage_pods"}


def _remember_indices(kwargs: dict[str, Any]) -> None:
    """kopf hands every handler its indices by name: keep live views for the reconciler."""
    for key, index in _INDICES.items():
        _state[key] = kwargs[index]
    for kind, index in _CACHES.items():
        _state[f"cache:{kind}"] = kwargs[index]


class _IndexCache:
    """The watch caches (observe.Cache) over kopf's indices, once a handler has handed them over."""

    def holds(self, kind: str) -> bool:
        return f"cache:{kind}" in _state

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        store = _state[f"cache:{kind}"].get((namespace, name))
        return next(iter(store), None) if store else None

    def pods_of(self, namespace: str, job: str) -> list[dict[str, Any]] | None:
        store = _state.get("cache:Pod")
        return None if store is None else list(store.get((namespace, job), []))


def _peers(namespace: str, target: str) -> list[Peer] | None:
    index = _state.get("by_target")
    return None if index is None else list(index.get((namespace, target), []))


def _storage_peers(namespace: str) -> list[StoragePeer] | None:
    index = _state.get("by_namespace")
    return None if index is None else list(index.get(namespace, []))


# --- reconciles -----------------------------------------------------------------------------------


def _reconcile(namespace: str, name: str) -> Exception | None:
    """One reconcile; a failure is returned for the caller to retry. A phase change the target's
    other releases care about reaches them (through the queue) at once."""
    try:
        outcome = reconciler().reconcile(namespace, name)
    except Exception as exc:  # noqa: BLE001 - any failure: retried with backoff, never lost
        level = logging.INFO if isinstance(exc, ChildConflict) else logging.WARNING
        log.log(level, "reconcile of %s/%s failed (retried with backoff): %s", namespace, name, exc)
        return exc
    if outcome.changed and outcome.phase in TOLD_TO_PEERS and outcome.target is not None:
        _tell_peers(namespace, outcome.target, name)
    return None


def _work() -> None:
    """A worker: reconciles what the queue hands it, until the queue closes."""
    work = queue()
    while (key := work.get()) is not None:
        error = _reconcile(*key)
        work.done(key, ok=error is None)
        metrics.QUEUE_DEPTH.set(len(work))


def _enqueue(key: Key, *, first: bool = False) -> None:
    queue().add(key, first=first)
    metrics.QUEUE_DEPTH.set(len(queue()))


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
        _enqueue((namespace, name))


@kopf.on.event(GROUP, VERSION, PLURAL)
async def release_event(
    event: kopf.RawEvent, namespace: str | None, name: str, spec: kopf.Spec, body: kopf.Body, **kwargs: Any
) -> None:
    """A release listed at start-up, created, changed, being deleted or gone. A reconcile that fails
    is retried by the queue with a doubling backoff until it succeeds, whatever started it."""
    namespace = _namespaced(namespace)
    _remember_indices(kwargs)
    key = (namespace, name)
    seen = _state.setdefault("seen", {})
    if event.get("type") == "DELETED":
        seen.pop(key, None)
        _parsed.pop(body.get("metadata", {}).get("uid", ""), None)
        reconciler().forget(namespace, name)
        queue().forget(key)
        _tell_peers(namespace, _target(spec), name)
        return
    before, now = seen.get(key), _what_a_reconcile_acts_on(body)
    seen[key] = now
    if before == now:
        return  # its status (the operator's own write) or an annotation: nothing to act on
    _enqueue(key, first=not body.get("status"))  # not started yet: before others' status news
    if now[1] and (before is None or not before[1]):
        _tell_peers(namespace, _target(spec), name)  # its deletion starts: who takes its target over


def _what_a_reconcile_acts_on(body: kopf.Body) -> tuple[Any, ...]:
    """What of a release, changed by someone else, is news to the operator: its spec (generation),
    its deletion starting, its finalizers."""
    meta = body.get("metadata", {})
    return meta.get("generation"), bool(meta.get("deletionTimestamp")), tuple(meta.get("finalizers") or ())


def _job_has_status(status: kopf.Status, **_: Any) -> bool:
    # A Job just created has no status: the reconcile that created it knows all it says.
    return bool(status)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED, when=_job_has_status)
async def job_event(namespace: str | None, labels: kopf.Labels, **kwargs: Any) -> None:
    namespace = _namespaced(namespace)
    _remember_indices(kwargs)
    release = labels.get(names.RELEASE_LABEL)
    if not release:
        return
    if labels.get(names.COMPONENT_LABEL) in STAGE_COMPONENTS and _phase(namespace, labels) in SETTLED:
        return  # a settled release's status holds its stages' outcomes (kopf lists every Job at start-up)
    _enqueue((namespace, release))


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
async def stage_pod_event(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    """A training or evaluation pod that cannot start (image, Secret, no node) says so in its own
    status, not its Job's: its release reads why, within seconds."""
    release = labels.get(names.RELEASE_LABEL)
    if release:
        _enqueue((_namespaced(namespace), release))


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_event(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **kwargs: Any) -> None:
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
            _enqueue((namespace, peer.name))


# --- the resync loop ------------------------------------------------------------------------------


def _resync_loop(stop: threading.Event) -> None:
    """Every progress_seconds, the releases that train or evaluate (their progress is read from their
    pod: contracts/progress.py); every resync_seconds, each release in flight over every release
    the index holds (including ones that never reconciled), and the serving releases whose key
    Secret changed."""
    settings = _state["settings"]
    last_resync = time.monotonic()
    while not stop.wait(min(settings.progress_seconds, settings.resync_seconds)):
        index = _state.get("by_target")
        if index is None:
            continue
        releases = [(ns, p) for (ns, _target), peers in list(index.items()) for p in peers]
        resync = time.monotonic() - last_resync >= settings.resync_seconds
        for namespace, peer in releases:
            if peer.phase in RUNNING_STAGES or (resync and peer.phase not in SETTLED):
                _enqueue((namespace, peer.name))
        if resync:
            last_resync = time.monotonic()
            serving = [(ns, p.name) for ns, p in releases if p.phase == Phase.SERVING]
            for key in reconciler().rotated_keys(serving):
                _enqueue(key)


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
