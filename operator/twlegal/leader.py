"""Leader election over a coordination.k8s.io Lease: of the `twlegal operator` processes sharing one
Lease (chart replicas, a stray one on a laptop), only the holder acts; the others stand by.

Our own loop over CoordinationV1Api, not kubernetes.leaderelection: that elector runs the work on a
daemon thread it never stops, cannot release the Lease, and sys.exit()s on a bad config. Here the
work runs on the main thread (kopf wants it, for its signal handlers); a thread renews the Lease and
sets `stop` when it is lost. client-go's rules: a Lease is free once unchanged for its duration by
*our* clock (no trust in clock skew); every write carries the resourceVersion read (of two
candidates one gets a 409); a leader that cannot renew for renew_seconds stops before lease_seconds.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from .kube import current_namespace, load_client

log = logging.getLogger("twlegal.leader")
# What a failed call raises: the API server's answer, or the connection's (urllib3, sockets).
_FAILURES = (ApiException, urllib3.exceptions.HTTPError, OSError)
_ENV = {"lease_seconds": "TWLEGAL_LEASE_SECONDS", "renew_seconds": "TWLEGAL_LEASE_RENEW_SECONDS"}
_ENV["retry_seconds"] = "TWLEGAL_LEASE_RETRY_SECONDS"  # (the tests shorten all three)


def _why(exc: BaseException) -> str:  # an ApiException's str() has every header; status and reason do
    return f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)


@dataclass(frozen=True, kw_only=True)
class LeaseSettings:
    """Durations as client-go's defaults (15s lease, 10s renew deadline, 2s retry)."""

    name: str = "twlegal-operator"
    namespace: str
    identity: str
    lease_seconds: float = 15
    renew_seconds: float = 10
    retry_seconds: float = 2

    def __post_init__(self) -> None:
        # A leader gives up (renew) before a standby may take over (lease), after more than one try.
        if not 0 < self.retry_seconds < self.renew_seconds < self.lease_seconds:
            raise ValueError("lease durations need 0 < retry_seconds < renew_seconds < lease_seconds")


def settings_from_env(env: Mapping[str, str], namespace: str | None = None) -> LeaseSettings:
    """POD_NAMESPACE (downward API) or the kubeconfig's; a fresh identity per process (a new candidate)."""
    durations: dict[str, Any] = {key: float(env[var]) for key, var in _ENV.items() if env.get(var)}
    namespace = namespace or env.get("POD_NAMESPACE") or current_namespace()
    return LeaseSettings(namespace=namespace, identity=f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}", **durations)


def may_take(holder: str, identity: str, unchanged_since: float, duration: float, now: float) -> bool:
    """May `identity` take a Lease of `holder`, unchanged since `unchanged_since` (our clock), for `duration`s?"""
    return not holder or holder == identity or now >= unchanged_since + duration


class _Elector:
    def __init__(self, settings: LeaseSettings):
        self.s = settings
        configuration = load_client().configuration
        configuration.retries = 0  # no urllib3 retries: the loops retry, against their deadline
        self.api = client.CoordinationV1Api(client.ApiClient(configuration))
        self.timeout = max(1.0, settings.renew_seconds / 2)  # one call: two fit in the renew deadline
        self.seen: tuple[str, float] = ("", 0.0)  # (resourceVersion, when we first saw it)
        self.renewed, self.leader = 0.0, ""  # when the last good write was sent; the holder last logged
        self.lost = False  # set by renew() alone: `stop` may also be set by whoever stops run
        self.where = f"{settings.namespace}/{settings.name}"

    def _read(self) -> Any:
        return self.api.read_namespaced_lease(self.s.name, self.s.namespace, _request_timeout=self.timeout)

    def _replace(self, lease: Any) -> Any:
        # The resourceVersion read travels with the update: a concurrent writer makes it a 409.
        return self.api.replace_namespaced_lease(self.s.name, self.s.namespace, lease, _request_timeout=self.timeout)

    def _spec(self, acquired: Any, transitions: int) -> Any:
        return client.V1LeaseSpec(
            holder_identity=self.s.identity,
            lease_duration_seconds=math.ceil(self.s.lease_seconds),
            acquire_time=acquired,
            renew_time=dt.datetime.now(dt.UTC),
            lease_transitions=transitions,
        )

    def try_hold(self, renewing: bool) -> bool:
        """Take or renew the Lease; False while another holds it (or, renewing, when it is gone)."""
        attempt = time.monotonic()  # before the call: the write may be seen before its answer comes
        try:
            lease = self._read()
        except ApiException as exc:
            if exc.status != 404:
                raise
            if renewing:
                return False  # deleted under a leader: a standby may create it now
            meta = client.V1ObjectMeta(name=self.s.name, namespace=self.s.namespace)
            body = client.V1Lease(metadata=meta, spec=self._spec(dt.datetime.now(dt.UTC), 0))
            self.api.create_namespaced_lease(self.s.namespace, body, _request_timeout=self.timeout)
            self.renewed = attempt  # of two creates, one gets a 409
            return True
        spec = lease.spec or client.V1LeaseSpec()
        if lease.metadata.resource_version != self.seen[0]:
            self.seen = (lease.metadata.resource_version, time.monotonic())
        holder = spec.holder_identity or ""
        mine = holder == self.s.identity
        if renewing and not mine:
            return False  # taken while we could not renew: lost, never retaken behind run's back
        if not may_take(holder, self.s.identity, self.seen[1], spec.lease_duration_seconds or 0, time.monotonic()):
            if holder != self.leader:  # once, and again when the leader changes
                self.leader = holder
                log.info("standing by: %s leads", holder)
            return False
        acquired = spec.acquire_time if mine else dt.datetime.now(dt.UTC)
        lease.spec = self._spec(acquired, (spec.lease_transitions or 0) + (0 if mine else 1))
        self.seen = (self._replace(lease).metadata.resource_version, time.monotonic())
        self.renewed = attempt
        return True

    def acquire(self) -> None:
        failure = ""
        while True:
            try:
                if self.try_hold(renewing=False):
                    log.info("leading: %s holds Lease %s", self.s.identity, self.where)
                    return
            except _FAILURES as exc:
                if failure != (failure := _why(exc)):  # once per distinct failure, not every retry
                    log.warning("Lease %s not acquired: %s", self.where, failure)
            time.sleep(self.s.retry_seconds)

    def renew(self, stop: threading.Event, done: threading.Event) -> None:
        """Renew every retry_seconds until `done`. Lost: set `stop`; if run has still not returned
        when another may take the Lease, end the process (two leaders are never an option)."""
        try:
            while not done.wait(self.s.retry_seconds):
                try:
                    if not self.try_hold(renewing=True):
                        log.error("Lease %s taken by another or deleted: stopping", self.where)
                        return
                except _FAILURES as exc:
                    log.warning("Lease %s not renewed: %s", self.where, _why(exc))
                if time.monotonic() - self.renewed >= self.s.renew_seconds:
                    log.error("Lease %s not renewed for %.0fs: stopping", self.where, self.s.renew_seconds)
                    return
        finally:  # any exit but `done`, an unexpected error included, is a lost Lease
            if not done.is_set():
                self.lost = True
                stop.set()
                if not done.wait(max(0.0, self.renewed + self.s.lease_seconds - time.monotonic())):
                    log.critical("still running when another may lead: exiting")
                    os._exit(1)

    def release(self) -> None:
        """Hand over at once: empty holder, 1s duration (as client-go releases). Best effort."""
        try:
            lease = self._read()
            if lease.spec and lease.spec.holder_identity == self.s.identity:
                lease.spec.holder_identity = ""
                lease.spec.lease_duration_seconds = 1
                lease.spec.renew_time = dt.datetime.now(dt.UTC)
                self._replace(lease)
                log.info("released Lease %s", self.where)
        except _FAILURES as exc:
            log.warning("Lease %s not released (the next leader waits it out): %s", self.where, _why(exc))


def lead(settings: LeaseSettings, run: Callable[[threading.Event], None]) -> int:
    """Block until this process holds the Lease, then call run(stop); keep renewing; when renewal fails
    for renew_seconds (lease lost), set `stop` (run must return soon after) and return 1. When run
    returns by itself, release the lease (holderIdentity empty, leaseDurationSeconds 1, so the standby
    takes over at once) and return 0."""
    elector = _Elector(settings)
    log.info("candidate %s for Lease %s", settings.identity, elector.where)
    elector.acquire()
    stop, done = threading.Event(), threading.Event()
    renewer = threading.Thread(target=elector.renew, args=(stop, done), name="twlegal-lease", daemon=True)
    renewer.start()
    try:
        run(stop)
    finally:
        done.set()
        renewer.join()
        if not elector.lost:  # also when run raised: this process is done leading either way
            elector.release()
    return 1 if elector.lost else 0
