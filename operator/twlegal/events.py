"""Events about releases, sent by a thread of their own (as client-go's event recorder does).

A reconcile never waits for an Event: with 200 releases applied at once, the Event POSTs were a
sixth of the operator's requests, in line before the next release's training Job. Events keep
their order. They are best effort, as Kubernetes treats them: status tells the same story, so an
Event the API server refuses, or one beyond a full queue, is logged and dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from .kube import Kube

log = logging.getLogger("twlegal.events")
_CLOSE = object()


class EventRecorder:
    def __init__(self, kube: Kube, capacity: int = 2000):
        self.kube = kube
        self._queue: queue.Queue[Any] = queue.Queue(capacity)
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def record(self, release: dict[str, Any], type_: str, reason: str, message: str) -> None:
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._send, name="twlegal-events", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait((release, type_, reason, message))
        except queue.Full:
            meta = release["metadata"]
            log.warning("event for %s/%s dropped (queue full): %s %s", meta["namespace"], meta["name"], reason, message)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every Event recorded so far was sent (or dropped)."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def close(self) -> None:
        self._queue.put(_CLOSE)

    def _send(self) -> None:
        while (item := self._queue.get()) is not _CLOSE:
            if isinstance(item, threading.Event):
                item.set()
                continue
            release, type_, reason, message = item
            try:
                self.kube.emit_event(release, type_, reason, message)
            except Exception as exc:  # noqa: BLE001 - refused, or an API server away: status already tells
                meta = release["metadata"]
                log.warning("event for %s/%s not recorded: %s %s", meta["namespace"], meta["name"], reason, exc)
