"""observe -> decide -> act for one release. The shell around the pure policies."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from . import metrics
from .api.release import LegalModelRelease
from .api.status import Phase
from .kube import Kube
from .policies import (
    Observed,
    Peer,
    ServingView,
    StoragePeer,
    children,
    decide,
    previous_release_name,
    settled_stages,
    storage,
)
from .render import names
from .render import serving as render_serving
from .render.settings import OperatorSettings

log = logging.getLogger("twlegal.reconciler")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


PeersLookup = Callable[[str, str], "list[Peer] | None"]
StoragePeersLookup = Callable[[str], "list[StoragePeer] | None"]


@dataclass(frozen=True)
class Outcome:
    """What one reconcile ended in: the phase, and whether it differs from the phase stored before
    (what the other releases of a target care about; a restart that changes nothing is no change)."""

    phase: str | None
    changed: bool = False


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        peers: PeersLookup | None = None,
        storage_peers: StoragePeersLookup | None = None,
    ):
        self.kube = kube
        self.settings = settings
        # (namespace, target) -> the target's releases and namespace -> its releases' placements,
        # from the operator's in-memory indices; None (or no lookup) falls back to listing releases
        # from the API server.
        self.peers = peers
        self.storage_peers = storage_peers
        self._locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self.phases: dict[tuple[str, str], str | None] = {}
        # (namespace, release) -> (key Secret, its resourceVersion) as a serving release's last
        # reconcile read them: the operator may not watch Secrets, so rotated_keys() compares.
        self.keys: dict[tuple[str, str], tuple[str, str | None]] = {}

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks[(namespace, name)]

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._locks.pop((namespace, name), None)
            self.phases.pop((namespace, name), None)
            self.keys.pop((namespace, name), None)
        metrics.publish_phases(self.phases)

    def reconcile(self, namespace: str, name: str) -> Outcome:
        """Bring one release a step closer to its goal. Safe to call any time."""
        started = time.perf_counter()
        metrics.RECONCILES.labels(namespace=namespace).inc()
        try:
            with self._lock(namespace, name):
                return self._reconcile(namespace, name)
        except ApiException as exc:
            if exc.status == 403 and "NamespaceTerminating" in (exc.body or ""):
                log.info("%s/%s: namespace is being deleted; nothing to do", namespace, name)
                return Outcome(None)
            metrics.RECONCILE_ERRORS.inc()
            raise
        except Exception:
            metrics.RECONCILE_ERRORS.inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)

    def _reconcile(self, namespace: str, name: str) -> Outcome:
        obj = self.kube.get_release(namespace, name)
        if obj is None:
            self.forget(namespace, name)
            return Outcome(None)
        release = LegalModelRelease.from_object(obj)
        observed = self._observe(release)
        decision = decide(release, observed, self.settings, _now())
        # What decide() asks to look at only when it matters (the target, the namespace's
        # placements), then a decision again on the fuller view.
        if decision.needs_storage_peers:
            observed = replace(observed, storage_peers=self._storage_peers(namespace))
            decision = decide(release, observed, self.settings, _now())
        if decision.needs_serving:
            observed = replace(observed, serving=self._observe_serving(release))
            decision = decide(release, observed, self.settings, _now())
        if decision.generate_key is not None:
            self._generate_key(release, decision.generate_key)
            observed = replace(observed, serving=self._observe_serving(release))
            decision = decide(release, observed, self.settings, _now())
        for child in decision.create:
            self.kube.create(child)  # raises ChildConflict on a same-named object it does not own
        for child in decision.apply:
            self.kube.apply(child)
        for child in decision.delete:
            self.kube.delete(child)
        old = decision.previous
        version = obj["metadata"]["resourceVersion"]
        if decision.status != old:
            version = self.kube.apply_status(namespace, name, decision.status)["metadata"]["resourceVersion"]
        for event in decision.events:
            metrics.TRANSITIONS.labels(phase=decision.status.get("phase")).inc()
            try:
                self.kube.emit_event(obj, event.type, event.reason, event.message)
            except ApiException as exc:  # an event is best effort; the status already tells
                log.warning("event for %s/%s not recorded: %s %s", namespace, name, exc.reason, exc.body)
        if decision.finalizers is not None:  # last: removing the reclaim finalizer lets the release go
            self.kube.set_finalizers(namespace, name, decision.finalizers, version)
        phase = decision.status.get("phase")
        if old.get("phase") != phase:
            log.info("%s/%s: %s -> %s", namespace, name, old.get("phase") or "-", phase)
        with self._guard:
            self.phases[(namespace, name)] = phase
            self._remember_key((namespace, name), release, phase, observed.serving)
        metrics.publish_phases(self.phases)
        if (
            storage.retention_keep(release) is None
            and storage.retention_keep(_with_status(obj, decision.status)) is not None
        ):
            # Training just settled: retention acts on the status just written, and no other event
            # may come (a failed release has no next stage), so decide once more now.
            return replace(self._reconcile(namespace, name), changed=old.get("phase") != phase)
        return Outcome(phase, changed=old.get("phase") != phase)

    def _remember_key(
        self, key: tuple[str, str], release: LegalModelRelease, phase: str | None, serving: ServingView | None
    ) -> None:
        ref = render_serving.api_key_ref(release, self.settings)
        if phase == Phase.SERVING and serving is not None and ref is not None:
            self.keys[key] = (ref.secret, serving.key_version)
        else:
            self.keys.pop(key, None)

    def rotated_keys(self, releases: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The serving releases among `releases` (namespace, name) whose key Secret changed since
        their last reconcile read it: one metadata GET per Secret, however many releases share it."""
        with self._guard:
            known = {release: self.keys[release] for release in releases if release in self.keys}
        by_secret: defaultdict[tuple[str, str], list[tuple[tuple[str, str], str | None]]] = defaultdict(list)
        for (namespace, name), (secret, version) in known.items():
            by_secret[(namespace, secret)].append(((namespace, name), version))
        rotated = []
        for (namespace, secret), readers in by_secret.items():
            try:
                meta = self.kube.get_metadata("v1", "Secret", namespace, secret)
            except Exception as exc:  # noqa: BLE001 - an API server away: the next resync looks again
                log.warning("key Secret %s/%s not read (the next resync tries again): %s", namespace, secret, exc)
                continue
            version = (meta or {}).get("metadata", {}).get("resourceVersion")
            rotated += [release for release, seen in readers if seen != version]
        return rotated

    def _storage_peers(self, namespace: str) -> tuple[StoragePeer, ...]:
        """The placements of the namespace's releases, when a release is about to start."""
        indexed = self.storage_peers(namespace) if self.storage_peers else None
        if indexed is not None:
            return tuple(indexed)
        peers = []
        for obj in self.kube.list_releases(namespace):
            try:
                peers.append(StoragePeer.of(LegalModelRelease.from_object(obj), self.settings))
            except ValidationError as exc:  # one unreadable release must not stop the others
                log.warning("%s/%s: not read for storage overlaps: %s", namespace, obj["metadata"]["name"], exc)
        return tuple(peers)

    def _generate_key(self, release: LegalModelRelease, ref: render_serving.KeyRef) -> None:
        """A random key (48 bytes, URL-safe) for a target that names none; created once (a 409 means
        another reconcile made it first). The value goes to the API server and nowhere else."""
        self.kube.create(render_serving.generated_key_secret(release, ref, secrets.token_urlsafe(48)))
        log.info("%s/%s: generated the API key Secret %s", release.namespace, release.name, ref.secret)

    def _observe(self, release: LegalModelRelease) -> Observed:
        if storage.is_deleting(release):
            return self._observe_deletion(release)
        jobs = _Jobs(self.kube, release)
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
            training_job=training_job,
            training_pods=jobs.finished_pods(training_job),
            evaluation_job=evaluation_job,
            evaluation_pods=jobs.finished_pods(evaluation_job),
            storage_job=storage_job,
            storage_pods=jobs.finished_pods(storage_job),
            waiting_pods=jobs.waiting_pods(in_flight),
            stale_children=tuple(jobs.stale),
        )

    def _observe_deletion(self, release: LegalModelRelease) -> Observed:
        """A release being deleted: its stage Jobs (to stop them) and its reclaim Job."""
        jobs = _Jobs(self.kube, release)
        reclaim = jobs.get(storage.reclaim_job_name(release))
        return Observed(
            training_job=jobs.get(names.training_job_name(release)),
            evaluation_job=jobs.get(names.evaluation_job_name(release)),
            storage_job=reclaim,
            storage_pods=jobs.finished_pods(reclaim),
        )

    def _observe_serving(self, release: LegalModelRelease) -> ServingView:
        ns = release.namespace
        target = names.serving_target(release)
        deployment = self.kube.get("apps/v1", "Deployment", ns, target)
        peers = self.peers(ns, target) if self.peers else None
        if peers is None:
            peers = [
                Peer.of(other)
                for other in map(LegalModelRelease.from_object, self.kube.list_releases(ns))
                if names.serving_target(other) == target
            ]
        previous = None
        previous_name = previous_release_name(release.name, deployment)
        if previous_name:
            obj = self.kube.get_release(ns, previous_name)
            previous = LegalModelRelease.from_object(obj) if obj else None
        key = render_serving.api_key_ref(release, self.settings)
        key_meta = self.kube.get_metadata("v1", "Secret", ns, key.secret) if key else None
        key_version = (key_meta or {}).get("metadata", {}).get("resourceVersion")
        return ServingView(deployment=deployment, peers=tuple(peers), previous=previous, key_version=key_version)


def _with_status(obj: dict[str, Any], status: dict[str, Any]) -> LegalModelRelease:
    return LegalModelRelease.from_object({**obj, "status": status})


class _Jobs:
    """The release's Jobs, read by name and trusted only when they are its own (policies/children.py:
    owned_by); the others are noted as stale, for decide() to wait on."""

    def __init__(self, kube: Kube, release: LegalModelRelease):
        self.kube = kube
        self.release = release
        self.stale: list[str] = []

    def get(self, name: str) -> dict[str, Any] | None:
        job = self.kube.get("batch/v1", "Job", self.release.namespace, name)
        if job is not None and not children.owned_by(job, self.release.metadata.uid):
            self.stale.append(f"Job/{name}")
            return None
        return job

    def _pods(self, job: dict[str, Any]) -> tuple[dict[str, Any], ...]:
        selector = f"batch.kubernetes.io/job-name={job['metadata']['name']}"
        return tuple(self.kube.list_pods(self.release.namespace, selector))

    def finished_pods(self, job: dict[str, Any] | None) -> tuple[dict[str, Any], ...]:
        # Termination messages matter only once the Job is done; skip the list call before.
        if job is None or not children.is_finished(job):
            return ()
        return self._pods(job)

    def waiting_pods(self, job: dict[str, Any] | None) -> tuple[dict[str, Any], ...]:
        """The pods of a Job that runs no ready pod yet: they say why they do not start. Once a pod
        is ready (or the Job is done) there is nothing to list."""
        if job is None or children.is_finished(job) or int((job.get("status") or {}).get("ready", 0)) > 0:
            return ()
        return self._pods(job)
