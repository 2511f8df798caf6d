"""Prometheus metrics of the operator."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from .api.status import PHASES, Phase

RELEASES = Gauge("twlegal_releases", "LegalModelReleases by phase", ["phase"])
RECONCILE_SECONDS = Histogram(
    "twlegal_reconcile_duration_seconds",
    "Time to reconcile one release",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# By namespace (a bounded label): which tenant's releases keep the operator busy.
RECONCILES = Counter("twlegal_reconciles_total", "Reconciles of a release, by its namespace", ["namespace"])
RECONCILE_ERRORS = Counter("twlegal_reconcile_errors_total", "Reconciles that raised an error")
TRANSITIONS = Counter("twlegal_phase_transitions_total", "Phase transitions", ["phase"])
QUEUE_DEPTH = Gauge("twlegal_workqueue_depth", "Releases waiting on the work queue for a reconcile")
# By verb and resource (plural, "status" for status writes): which reads and writes dominate.
API_REQUESTS = Counter(
    "twlegal_api_requests_total", "Requests the operator sent to the API server", ["verb", "resource"]
)


def publish_phases(phases: Mapping[Any, str | None]) -> None:
    counts = Tally(phase or Phase.PENDING.value for phase in phases.values())
    for phase in PHASES:
        RELEASES.labels(phase=phase).set(counts.get(phase, 0))
