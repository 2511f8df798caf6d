"""Live progress of a run, served by rank 0 (and the evaluator) as Prometheus metrics on the port
of contracts/progress.py: the operator reads it into the release's status, Prometheus scrapes it.

Only the figures known so far are exported (no zeros for "not yet"). A port already taken (two
runs on one host) costs the metrics, never the run.
"""

from __future__ import annotations

import logging
from typing import Any

from twlegal.contracts.progress import METRICS, Progress, Stage

log = logging.getLogger("twlegal.progress")


class ProgressServer:
    """A registry of its own with one collector: the current Progress, as gauges."""

    def __init__(self, stage: Stage, port: int | None, host: str = "0.0.0.0"):
        self.progress = Progress(stage=stage)
        self._server: Any = None
        if not port:
            return
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        try:
            self._server, _ = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            log.warning("progress metrics not served on port %s: %s", port, exc)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def update(self, **values: Any) -> None:
        self.progress = self.progress.model_copy(update=values)

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        helps = dict(METRICS[self.progress.stage].values())
        for name, value in self.progress.samples().items():
            yield GaugeMetricFamily(name, helps[name], value=value)
