"""observe -> decide -> act for one release. The shell around the pure policies."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from . import metrics
from .api.release import LegalModelRelease
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


class Reconciler:
    def __init__(self, kube: Kube, settings: OperatorSettings, peers: PeersLookup | None = None):
        self.kube = kube
        self.settings = settings
        # (namespace, target) -> the target's releases, from the operator's in-memory index; None
        # (or no lookup) falls back to listing releases from the API server.
        self.peers = peers
        self._locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self.phases: dict[tuple[str, str], str | None] = {}

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks[(namespace, name)]

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._locks.pop((namespace, name), None)
            self.phases.pop((namespace, name), None)
        metrics.publish_phases(self.phases)

    def reconcile(self, namespace: str, name: str) -> str | None:
        """Bring one release a step closer to its goal; returns its phase. Safe to call any time."""
        started = time.perf_counter()
        try:
            with self._lock(namespace, name):
                return self._reconcile(namespace, name)
        except ApiException as exc:
            if exc.status == 403 and "NamespaceTerminating" in (exc.body or ""):
                log.info("%s/%s: namespace is being deleted; nothing to do", namespace, name)
                return None
            metrics.RECONCILE_ERRORS.inc()
            raise
        except Exception:
            metrics.RECONCILE_ERRORS.inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)

    def _reconcile(self, namespace: str, name: str) -> str | None:
        obj = self.kube.get_release(namespace, name)
        if obj is None:
            self.forget(namespace, name)
            return None
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
            self.kube.create(child)
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
        metrics.publish_phases(self.phases)
        return phase

    def _storage_peers(self, namespace: str) -> tuple[StoragePeer, ...]:
        """The placements of the namespace's releases, read once, when a release is about to start."""
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
        ns = release.namespace
        if storage.is_deleting(release):
            return self._observe_deletion(release)
        storage_job = None
        if storage.retention_keep(release) is not None:
            storage_job = self.kube.get("batch/v1", "Job", ns, storage.prune_job_name(release))
        trained, evaluated = settled_stages(release)
        if evaluated:
            # Status already holds both outcomes: only serving (and retention) need looking at.
            return Observed(storage_job=storage_job, storage_pods=self._finished_pods(ns, storage_job))
        training_job = None if trained else self.kube.get("batch/v1", "Job", ns, names.training_job_name(release))
        evaluation_job = None
        if release.spec.evaluation is not None and (trained or children.is_finished(training_job)):
            evaluation_job = self.kube.get("batch/v1", "Job", ns, names.evaluation_job_name(release))
        return Observed(
            training_job=training_job,
            training_pods=self._finished_pods(ns, training_job),
            evaluation_job=evaluation_job,
            evaluation_pods=self._finished_pods(ns, evaluation_job),
            storage_job=storage_job,
            storage_pods=self._finished_pods(ns, storage_job),
        )

    def _observe_deletion(self, release: LegalModelRelease) -> Observed:
        """A release being deleted: its stage Jobs (to stop them) and its reclaim Job."""
        ns = release.namespace
        reclaim = self.kube.get("batch/v1", "Job", ns, storage.reclaim_job_name(release))
        return Observed(
            training_job=self.kube.get("batch/v1", "Job", ns, names.training_job_name(release)),
            evaluation_job=self.kube.get("batch/v1", "Job", ns, names.evaluation_job_name(release)),
            storage_job=reclaim,
            storage_pods=self._finished_pods(ns, reclaim),
        )

    def _finished_pods(self, namespace: str, job: dict[str, Any] | None) -> tuple[dict[str, Any], ...]:
        # Termination messages matter only once the Job is done; skip the list call before.
        if job is None or not children.is_finished(job):
            return ()
        selector = f"batch.kubernetes.io/job-name={job['metadata']['name']}"
        return tuple(self.kube.list_pods(namespace, selector))

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
