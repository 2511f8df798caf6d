"""observe -> decide -> act for one release. The shell around the pure policies."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from kubernetes.client.rest import ApiException

from . import metrics
from .api.release import LegalModelRelease
from .api.status import Phase
from .events import EventRecorder
from .kube import Kube
from .observe import Cache, Reader, observe, observe_serving, storage_peers_of
from .policies import Peer, ServingView, StoragePeer, decide, storage
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
    target: str | None = None  # the release's serving target, whose other releases may care


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        peers: PeersLookup | None = None,
        storage_peers: StoragePeersLookup | None = None,
        cache: Cache | None = None,
    ):
        self.kube = kube
        self.reader = Reader(kube, cache)
        self.events = EventRecorder(kube)
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
        # (namespace, kind, name) -> (hash of the object applied, the Deployment's generation after
        # it): what this process last applied to each serving object, so the same set is not sent
        # again (see _apply).
        self.applied: dict[tuple[str, str, str], tuple[str, int | None]] = {}

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks[(namespace, name)]

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._locks.pop((namespace, name), None)
            self.phases.pop((namespace, name), None)
            self.keys.pop((namespace, name), None)
        self.reader.forget((namespace, name))
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
        obj = self.reader.release(namespace, name)
        if obj is None:
            self.forget(namespace, name)
            return Outcome(None)
        release = LegalModelRelease.from_object(obj)
        observed = observe(self.reader, release)
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
        if decision.apply:
            self._apply(decision.apply, observed.serving.deployment if observed.serving else None)
        for child in decision.delete:
            self.kube.delete(child)
        old = decision.previous
        version = obj["metadata"]["resourceVersion"]
        if decision.status != old:
            written = self.kube.apply_status(namespace, name, decision.status)
            self.reader.wrote((namespace, name), written)
            version = written["metadata"]["resourceVersion"]
        for event in decision.events:
            metrics.TRANSITIONS.labels(phase=decision.status.get("phase")).inc()
            self.events.record(obj, event.type, event.reason, event.message)
        if decision.finalizers is not None:  # last: removing the reclaim finalizer lets the release go
            self.reader.wrote(
                (namespace, name), self.kube.set_finalizers(namespace, name, decision.finalizers, version)
            )
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
        return Outcome(phase, changed=old.get("phase") != phase, target=names.serving_target(release))

    def _apply(self, objects: list[dict[str, Any]], deployment: dict[str, Any] | None) -> None:
        """Server-side apply of a target's objects, unless this process applied exactly these last
        and the Deployment has not changed since (an edit of its spec by anyone else raises its
        generation; a Deployment deleted by hand is missing; a restart of the operator forgets all):
        then they are sent again. A serving release is reconciled on every event of its Deployment:
        sending the same three applies each time was most of the operator's requests with 200
        targets, and of the API server's work."""
        keys = [(obj["metadata"]["namespace"], obj["kind"], obj["metadata"]["name"]) for obj in objects]
        digests = [_digest(obj) for obj in objects]
        observed = (deployment or {}).get("metadata", {}).get("generation")
        with self._guard:
            known = [self.applied.get(key) for key in keys]
        if all(
            k is not None and k[0] == digest and (kind != "Deployment" or _not_changed_since(observed, k[1]))
            for k, digest, (_, kind, _) in zip(known, digests, keys, strict=True)
        ):
            return
        for key, digest, obj in zip(keys, digests, objects, strict=True):
            with self._guard:
                self.applied.pop(key, None)  # unknown until the apply has answered
            result = self.kube.apply(obj)
            with self._guard:
                self.applied[key] = (digest, (result or {}).get("metadata", {}).get("generation"))

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
                version = self.reader.refresh_key(namespace, secret)
            except Exception as exc:  # noqa: BLE001 - an API server away: the next resync looks again
                log.warning("key Secret %s/%s not read (the next resync tries again): %s", namespace, secret, exc)
                continue
            rotated += [release for release, seen in readers if seen != version]
        return rotated

    def _storage_peers(self, namespace: str) -> tuple[StoragePeer, ...]:
        """The placements of the namespace's releases, when a release is about to start."""
        indexed = self.storage_peers(namespace) if self.storage_peers else None
        return tuple(indexed) if indexed is not None else storage_peers_of(self.kube, namespace, self.settings)

    def _generate_key(self, release: LegalModelRelease, ref: render_serving.KeyRef) -> None:
        """A random key (48 bytes, URL-safe) for a target that names none; created once (a 409 means
        another reconcile made it first). The value goes to the API server and nowhere else."""
        self.kube.create(render_serving.generated_key_secret(release, ref, secrets.token_urlsafe(48)))
        log.info("%s/%s: generated the API key Secret %s", release.namespace, release.name, ref.secret)

    def _observe_serving(self, release: LegalModelRelease) -> ServingView:
        peers = self.peers(release.namespace, names.serving_target(release)) if self.peers else None
        return observe_serving(self.reader, release, self.settings, peers)


def _not_changed_since(deployment_generation: int | None, applied_generation: int | None) -> bool:
    """Whether a Deployment read at `deployment_generation` shows no spec change after the apply that
    left it at `applied_generation`. Generations only grow: a cache that lags the apply shows an
    older one, not a change. None (no Deployment: deleted by hand, or not in the cache yet) is one."""
    return (
        deployment_generation is not None
        and applied_generation is not None
        and deployment_generation <= applied_generation
    )


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _with_status(obj: dict[str, Any], status: dict[str, Any]) -> LegalModelRelease:
    return LegalModelRelease.from_object({**obj, "status": status})
