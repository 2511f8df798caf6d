"""Which releases the resync loop visits, and when (no client, no kopf).

A reconcile that an event started and that failed is retried with a backoff that doubles from one
second up to the resync interval, until it succeeds. A release still in flight (not settled) is
visited every resync interval: that is what notices a start deadline passing or an event missed.
Settled releases are left to their events (the resync tick also tells the caller, which checks the
key Secrets of serving releases then: see Reconciler.rotated_keys).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

Key = tuple[str, str]  # (namespace, name)


class HasPhase(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def phase(self) -> str | None: ...


P = TypeVar("P", bound=HasPhase)


@dataclass(frozen=True)
class Due(Generic[P]):
    releases: list[tuple[str, P]]  # to reconcile now
    resync: bool  # this is a resync tick (once per resync interval)


@dataclass
class Retries:
    resync_seconds: float
    base_seconds: float = 1.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[Key, tuple[int, float]] = field(default_factory=dict)  # key -> (failures, next try)
    _last_resync: float | None = None
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def delay(self, retry: int) -> float:
        """Seconds before retry number `retry` (0 for the first): 1, 2, 4, ... capped at the resync interval."""
        return float(min(self.base_seconds * 2 ** min(retry, 30), self.resync_seconds))

    def failed(self, key: Key, _error: Exception | None = None) -> None:
        with self._guard:
            count = self._failures.get(key, (0, 0.0))[0]
            self._failures[key] = (count + 1, self.clock() + self.delay(count))

    def succeeded(self, key: Key) -> None:
        with self._guard:
            self._failures.pop(key, None)

    def due(self, releases: Iterable[tuple[str, P]], *, settled: Collection[str]) -> Due[P]:
        """The releases to reconcile now: each failed one whose backoff has passed, and, once per resync
        interval, each one not settled (a release that never reconciled has no phase: not settled)."""
        now = self.clock()
        with self._guard:
            resync = self._last_resync is None or now - self._last_resync >= self.resync_seconds
            if resync:
                self._last_resync = now
            failures = dict(self._failures)
        chosen = []
        for namespace, release in releases:
            failure = failures.get((namespace, release.name))
            if (failure is not None and failure[1] <= now) or (resync and release.phase not in settled):
                chosen.append((namespace, release))
        return Due(chosen, resync)
