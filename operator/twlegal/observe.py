"""What a reconcile reads: the release and its children, from the operator's watch caches where it
has them, from the API server otherwise. The shell's reading half (reconciler.py acts).

The caches are kopf indices over the watches the operator keeps anyway (releases, and Jobs and
Deployments it manages): reading a child costs no request. A cache can lag a write of this process
by the time its watch event takes; every reader here is fine with that but one, the release
itself, whose status this process writes: a reconcile that read the status from before its own
last write would announce the same transition twice. So the release is read from the cache only
when the cache holds the version this process last wrote or read, and from the API server
otherwise.
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from typing import Any, Protocol

from pydantic import ValidationError

from .api.release import KIND, LegalModelRelease
from .contracts import progress
from .contracts.progress import Progress
from .kube import Kube
from .policies import Observed, Peer, ServingView, StoragePeer, children, previous_release_name, settled_stages, storage
from .render import names
from .render import serving as render_serving
from .render.settings import OperatorSettings

Key = tuple[str, str]
log = logging.getLogger("twlegal.observe")


class Cache(Protocol):
    """The operator's watch caches: objects of the kinds it holds, by namespace and name."""

    def holds(self, kind: str) -> bool: ...

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def pods_of(self, namespace: str, job: str) -> list[dict[str, Any]] | None:
        """A stage Job's pods (None: no pod cache)."""
        ...


class Reader:
    def __init__(self, kube: Kube, cache: Cache | None = None):
        self.kube = kube
        self.cache = cache
        self._guard = threading.Lock()
        # (namespace, release) -> the resourceVersion this process last wrote or read from the API
        self._versions: dict[Key, str] = {}
        # (namespace, Secret) -> the key Secret's resourceVersion, as last read
        self._key_versions: dict[Key, str] = {}

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if self.cache is not None and self.cache.holds(kind):
            return self.cache.get(kind, namespace, name)
        return self.kube.get(api_version, kind, namespace, name)

    def release(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The release as fresh as this process's own last write (see the module's docstring)."""
        key = (namespace, name)
        if self.cache is not None and self.cache.holds(KIND):
            cached = self.cache.get(KIND, namespace, name)
            with self._guard:
                known = self._versions.get(key)
            if cached is not None and known in (None, cached["metadata"].get("resourceVersion")):
                return cached
        obj = self.kube.get_release(namespace, name)
        if obj is not None:
            self.wrote(key, obj)
        return obj

    def other_release(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Another release, as the cache has it (its status is not this reconcile's to write)."""
        if self.cache is not None and self.cache.holds(KIND):
            return self.cache.get(KIND, namespace, name)
        return self.kube.get_release(namespace, name)

    def key_version(self, namespace: str, secret: str) -> str | None:
        """A key Secret's resourceVersion (None: absent). The operator may not watch Secrets: read
        (its metadata only, never its data) once, then kept until the resync reads it again
        (refresh_key), which is how a rotated key is noticed. An absent one is read each time."""
        with self._guard:
            known = self._key_versions.get((namespace, secret))
        return known if known is not None else self.refresh_key(namespace, secret)

    def refresh_key(self, namespace: str, secret: str) -> str | None:
        meta = self.kube.get_metadata("v1", "Secret", namespace, secret)
        version: str | None = (meta or {}).get("metadata", {}).get("resourceVersion")
        with self._guard:
            if version is None:
                self._key_versions.pop((namespace, secret), None)
            else:
                self._key_versions[(namespace, secret)] = version
        return version

    def wrote(self, key: Key, obj: dict[str, Any]) -> None:
        with self._guard:
            self._versions[key] = obj["metadata"]["resourceVersion"]

    def forget(self, key: Key) -> None:
        with self._guard:
            self._versions.pop(key, None)


def observe(reader: Reader, release: LegalModelRelease) -> Observed:
    if storage.is_deleting(release):
        return _observe_deletion(reader, release)
    jobs = _Jobs(reader, release)
    storage_job = jobs.get(storage.prune_job_name(release)) if storage.retention_keep(release) is not None else None
    trained, evaluated = settled_stages(release)
    if evaluated:
        # Status already holds both outcomes: only serving (and retention) need looking at.
        return Observed(
            storage_job=storage_job,
            storage_pods=jobs.finished_pods(storage_job),
            stale_children=tuple(jobs.stale),
        )
    training_job = None if trained else jobs.get(names.training_job_name(release))
    evaluation_job = None
    if release.spec.evaluation is not None and (trained or children.is_finished(training_job)):
        evaluation_job = jobs.get(names.evaluation_job_name(release))
    in_flight = evaluation_job if evaluation_job is not None else training_job
    return Observed(
        progress=jobs.progress(in_flight),
        training_job=training_job,
        training_pods=jobs.finished_pods(training_job),
        evaluation_job=evaluation_job,
        evaluation_pods=jobs.finished_pods(evaluation_job),
        storage_job=storage_job,
        storage_pods=jobs.finished_pods(storage_job),
        waiting_pods=jobs.waiting_pods(in_flight),
        stale_children=tuple(jobs.stale),
    )


def _observe_deletion(reader: Reader, release: LegalModelRelease) -> Observed:
    """A release being deleted: its stage Jobs (to stop them) and its reclaim Job."""
    jobs = _Jobs(reader, release)
    reclaim = jobs.get(storage.reclaim_job_name(release))
    return Observed(
        training_job=jobs.get(names.training_job_name(release)),
        evaluation_job=jobs.get(names.evaluation_job_name(release)),
        storage_job=reclaim,
        storage_pods=jobs.finished_pods(reclaim),
    )


def observe_serving(
    reader: Reader, release: LegalModelRelease, settings: OperatorSettings, peers: list[Peer] | None
) -> ServingView:
    ns = release.namespace
    target = names.serving_target(release)
    deployment = reader.get("apps/v1", "Deployment", ns, target)
    if peers is None:
        peers = [
            Peer.of(other)
            for other in map(LegalModelRelease.from_object, reader.kube.list_releases(ns))
            if names.serving_target(other) == target
        ]
    previous = None
    previous_name = previous_release_name(release.name, deployment)
    if previous_name:
        obj = reader.other_release(ns, previous_name)
        previous = LegalModelRelease.from_object(obj) if obj else None
    key = render_serving.api_key_ref(release, settings)
    key_version = reader.key_version(ns, key.secret) if key else None
    return ServingView(deployment=deployment, peers=tuple(peers), previous=previous, key_version=key_version)


def storage_peers_of(kube: Kube, namespace: str, settings: OperatorSettings) -> tuple[StoragePeer, ...]:
    """The placements of the namespace's releases, listed (when no index holds them)."""
    peers = []
    for obj in kube.list_releases(namespace):
        try:
            peers.append(StoragePeer.of(LegalModelRelease.from_object(obj), settings))
        except ValidationError as exc:  # one unreadable release must not stop the others
            log.warning("%s/%s: not read for storage overlaps: %s", namespace, obj["metadata"]["name"], exc)
    return tuple(peers)


PROGRESS_TIMEOUT = 2.0  # seconds: a reconcile never waits long on a busy trainer


def read_progress(ip: str, port: int = progress.PORT) -> Progress | None:
    """GET a stage pod's metrics and read its Progress (the operator's only connection to a pod)."""
    from prometheus_client.parser import text_string_to_metric_families

    host = f"[{ip}]" if ":" in ip else ip
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{progress.PATH}", timeout=PROGRESS_TIMEOUT) as response:
            text = response.read().decode("utf-8", errors="replace")
        samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    except (OSError, ValueError) as exc:  # not listening yet, gone, or not our metrics
        log.debug("progress not read from %s: %s", ip, exc)
        return None
    return Progress.from_samples(samples)


class _Jobs:
    """The release's Jobs, read by name and trusted only when they are its own (policies/children.py:
    owned_by); the others are noted as stale, for decide() to wait on."""

    def __init__(self, reader: Reader, release: LegalModelRelease):
        self.reader = reader
        self.release = release
        self.stale: list[str] = []

    def get(self, name: str) -> dict[str, Any] | None:
        job = self.reader.get("batch/v1", "Job", self.release.namespace, name)
        if job is not None and not children.owned_by(job, self.release.metadata.uid):
            self.stale.append(f"Job/{name}")
            return None
        return job

    def _pods(self, job: dict[str, Any]) -> tuple[dict[str, Any], ...]:
        selector = f"batch.kubernetes.io/job-name={job['metadata']['name']}"
        return tuple(self.reader.kube.list_pods(self.release.namespace, selector))

    def finished_pods(self, job: dict[str, Any] | None) -> tuple[dict[str, Any], ...]:
        # Termination messages matter only once the Job is done; skip the list call before. Listed
        # from the API server, never the cache: the outcome is recorded for good, and the pod watch
        # may lag the Job's (a result missing there would read as "no result reported").
        if job is None or not children.is_finished(job):
            return ()
        return self._pods(job)

    def progress(self, job: dict[str, Any] | None) -> Progress | None:
        """What the running pod of a stage Job reports on its progress port (contracts/progress.py);
        None when no pod runs or it does not answer within PROGRESS_TIMEOUT (the next read will)."""
        if job is None or children.is_finished(job) or int((job.get("status") or {}).get("ready", 0)) == 0:
            return None
        cache = self.reader.cache
        pods = cache.pods_of(self.release.namespace, job["metadata"]["name"]) if cache is not None else None
        if pods is None:
            pods = list(self._pods(job))
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        ip = ((running[-1] if running else {}).get("status") or {}).get("podIP")
        return read_progress(ip) if ip else None

    def waiting_pods(self, job: dict[str, Any] | None) -> tuple[dict[str, Any], ...]:
        """The pods of a Job that runs no ready pod yet: they say why they do not start (from the
        pod cache: a reason that lags is told by the next event). Once a pod is ready (or the Job is
        done) there is nothing to read."""
        if job is None or children.is_finished(job) or int((job.get("status") or {}).get("ready", 0)) > 0:
            return ()
        cache = self.reader.cache
        cached = cache.pods_of(self.release.namespace, job["metadata"]["name"]) if cache is not None else None
        return tuple(cached) if cached is not None else self._pods(job)
