"""The queue of releases to reconcile, in the manner of client-go's workqueue (no client, no kopf).

Events only say "this release may have something to do". Under load they come far faster than
reconciles finish (a rollout of 200 targets sends thousands of Deployment, Job and pod events), and
a handler that reconciled on each one fell minutes behind: a release named by ten events while it
waits is reconciled once here, because the queue holds a key once. Besides:
- a release is never reconciled by two workers at once: a key added while it is being reconciled
  runs again right after (its reconcile may have read the world before the change);
- a reconcile that fails comes back after a backoff that doubles from `base_seconds` up to
  `max_seconds` (the resync interval), until one succeeds; success resets it;
- keys come out in the order they became due; a release that has not started yet (added with
  `first=True`: no status, so no Job either) comes out before the others, so a burst of new releases
  is not held up by the status updates their own earlier members' Jobs and pods bring (that work
  waits seconds; a new release's GPUs would wait for it).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Key = tuple[str, str]  # (namespace, release name)


@dataclass
class WorkQueue:
    base_seconds: float = 1.0
    max_seconds: float = 60.0
    clock: Callable[[], float] = time.monotonic
    # Two heaps of (due, seq, key): releases not started yet (added `first`), and the rest. A key's
    # live entry is the one _queued names (heap, due, seq); others were replaced by a sooner add.
    _heaps: tuple[list[tuple[float, int, Key]], list[tuple[float, int, Key]]] = field(default_factory=lambda: ([], []))
    _queued: dict[Key, tuple[int, float, int]] = field(default_factory=dict)
    _active: set[Key] = field(default_factory=set)
    _again: dict[Key, float] = field(default_factory=dict)  # added while active -> when it is due
    _failures: dict[Key, int] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _closed: bool = False
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def delay(self, failures: int) -> float:
        """Seconds before the retry after `failures` failures in a row (1 for the first): 1, 2, 4, ..."""
        return float(min(self.base_seconds * 2 ** min(max(failures - 1, 0), 30), self.max_seconds))

    def add(self, key: Key, delay: float = 0.0, *, first: bool = False) -> None:
        """Reconcile `key` once `delay` seconds have passed (before any other key that is due, with
        `first`); an earlier due time already queued stands."""
        with self._cond:
            self._push(key, self.clock() + delay, first)

    def _push(self, key: Key, due: float, first: bool = False) -> None:
        if self._closed:
            return
        if key in self._active:
            self._again[key] = min(self._again.get(key, due), due)
            return
        heap = 0 if first else 1
        queued = self._queued.get(key)
        if queued is not None and queued[1] <= due and queued[0] <= heap:
            return
        entry = (heap, due, next(self._seq))
        self._queued[key] = entry
        heapq.heappush(self._heaps[heap], (due, entry[2], key))
        self._cond.notify()

    def get(self, timeout: float | None = None) -> Key | None:
        """The next key that is due and not being reconciled, marked active until done(); None once
        closed or when `timeout` passes."""
        deadline = None if timeout is None else self.clock() + timeout
        with self._cond:
            while not self._closed:
                now = self.clock()
                tops = [self._top(heap) for heap in (0, 1)]
                for heap, top in enumerate(tops):
                    if top is not None and top[0] <= now:
                        _, _, key = heapq.heappop(self._heaps[heap])
                        del self._queued[key]
                        self._active.add(key)
                        return key
                if deadline is not None and deadline <= now:
                    return None
                waits = [t - now for t in (*(top[0] for top in tops if top is not None), deadline) if t is not None]
                self._cond.wait(min(waits) if waits else None)
            return None

    def _top(self, heap: int) -> tuple[float, int, Key] | None:
        """The live entry on top of a heap, dropping the ones a sooner add replaced."""
        entries = self._heaps[heap]
        while entries and self._queued.get(entries[0][2]) != (heap, *entries[0][:2]):
            heapq.heappop(entries)
        return entries[0] if entries else None

    def done(self, key: Key, *, ok: bool) -> float | None:
        """A reconcile of `key` ended. A failure queues it again after its backoff (returned)."""
        with self._cond:
            self._active.discard(key)
            retry = None
            if ok:
                self._failures.pop(key, None)
            else:
                self._failures[key] = self._failures.get(key, 0) + 1
                retry = self.delay(self._failures[key])
                self._push(key, self.clock() + retry)
            again = self._again.pop(key, None)
            if again is not None:
                self._push(key, again)
            return retry

    def forget(self, key: Key) -> None:
        """The release is gone: drop its queued reconcile and its backoff."""
        with self._cond:
            self._queued.pop(key, None)
            self._again.pop(key, None)
            self._failures.pop(key, None)

    def failing(self) -> int:
        with self._cond:
            return len(self._failures)

    def __len__(self) -> int:
        with self._cond:
            return len(self._queued)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
