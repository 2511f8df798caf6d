"""Helpers of operator_bench.py: statistics, watches, the operator process, its metrics, the floor."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, watch

from tests.cases import load_example
from twlegal.api.release import LegalModelRelease
from twlegal.render import training
from twlegal.render.settings import OperatorSettings
from twlegal_dev.controlplane import free_port

GROUP, VERSION, PLURAL = "twlegal.io", "v1alpha1", "legalmodelreleases"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000, 1)


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50_ms": pct(values, 50),
        "p99_ms": pct(values, 99),
        "max_ms": round(max(values) * 1000, 1) if values else None,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


class Timeline:
    """Arrival times (monotonic) of Jobs, pinned Deployments and finished training pods, by release
    name, in every namespace (the runs use distinct release names)."""

    def __init__(self, api: client.ApiClient):
        self.api = api
        self.created: dict[str, float] = {}
        self.job_seen: dict[str, float] = {}
        self.job_complete: dict[str, float] = {}
        self.trained: dict[str, float] = {}
        self.pinned: dict[str, float] = {}
        self.stop = threading.Event()

    def on_finish(self, release: str, component: str, t: float) -> None:
        if component == "training":
            self.trained.setdefault(release, t)

    def start(self) -> None:
        threading.Thread(target=self._watch_jobs, daemon=True).start()
        threading.Thread(target=self._watch_deployments, daemon=True).start()

    def _watch(self, list_fn, record) -> None:
        while not self.stop.is_set():
            try:
                for event in watch.Watch().stream(list_fn, timeout_seconds=30):
                    record(event["object"])
            except Exception:  # noqa: BLE001 - the control plane stops at the end of the run
                time.sleep(0.5)

    def _watch_jobs(self) -> None:
        def record(job) -> None:
            release = (job.metadata.labels or {}).get("twlegal.io/release")
            if release:
                self.job_seen.setdefault(release, time.monotonic())
                if any(c.type == "Complete" and c.status == "True" for c in (job.status.conditions or [])):
                    self.job_complete.setdefault(release, time.monotonic())

        self._watch(client.BatchV1Api(self.api).list_job_for_all_namespaces, record)

    def _watch_deployments(self) -> None:
        def record(deployment) -> None:
            release = (deployment.spec.template.metadata.labels or {}).get("twlegal.io/release")
            if release:
                self.pinned.setdefault(release, time.monotonic())

        self._watch(client.AppsV1Api(self.api).list_deployment_for_all_namespaces, record)

    def create_to_job(self, names: list[str]) -> dict:
        return summary([self.job_seen[n] - self.created[n] for n in names if n in self.job_seen])

    def latencies(self, names: list[str]) -> dict:
        return {
            "create_to_job_exists": self.create_to_job(names),
            # The operator's share: from the Job's Complete condition to the pinned Deployment.
            "job_succeeded_to_deployment_pinned": summary(
                [self.pinned[n] - self.job_complete[n] for n in names if n in self.pinned and n in self.job_complete]
            ),
            # End to end, including the Job controller noticing the pod: pod succeeded -> pinned.
            "training_pod_succeeded_to_deployment_pinned": summary(
                [self.pinned[n] - self.trained[n] for n in names if n in self.pinned and n in self.trained]
            ),
        }


def release(name: str, namespace: str, *, target: str | None = None, version: str | None = None) -> dict:
    """The tiny example without evaluation; its own target unless one is given."""
    doc = copy.deepcopy(load_example())
    doc["metadata"] = {"name": name, "namespace": namespace}
    del doc["spec"]["evaluation"]
    doc["spec"]["serving"]["target"] = target or name
    if version:
        doc["spec"]["version"] = version
    return doc


def storage(namespace: str) -> dict:
    """A hostPath PersistentVolume bound to the namespace's `twlegal-models` claim."""
    pv = f"bench-models-{namespace}"
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": pv},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "manual",
                    "hostPath": {"path": f"/tmp/twlegal-bench/{namespace}"},
                    "claimRef": {"namespace": namespace, "name": "twlegal-models"},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "twlegal-models", "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "manual",
                    "volumeName": pv,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        ],
    }


def phases(custom: client.CustomObjectsApi, namespace: str) -> dict[str, str | None]:
    # resourceVersion=0: from the API server's watch cache, so polling costs etcd nothing.
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, resource_version="0")["items"]
    return {i["metadata"]["name"]: (i.get("status") or {}).get("phase") for i in items}


def quiet(custom: client.CustomObjectsApi, namespace: str, seconds: float = 10) -> bool:
    """True when no release of the namespace changed for `seconds` (resourceVersions stable)."""

    def versions() -> dict:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        return {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in items}

    before = versions()
    time.sleep(seconds)
    return versions() == before


def wait(what: str, predicate, timeout: float, interval: float = 0.2) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if predicate():
                return time.monotonic() - started
        except OSError:  # not listening yet
            pass
        time.sleep(interval)
    raise TimeoutError(what)


# --- the operator process -----------------------------------------------------------------------


def start_operator(kubeconfig: Path, log: Path, *, resync_seconds: float, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "TWLEGAL_METRICS_PORT": str(port),
        "TWLEGAL_RESYNC_SECONDS": str(resync_seconds),
        "TWLEGAL_WORKERS": str(workers),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "twlegal.cli", "operator", "--liveness-port", "0"],
        env=env,
        stdout=open(log, "ab"),  # noqa: SIM115 - the child process owns the file
        stderr=subprocess.STDOUT,
    )
    return proc, port


def proc_stat(pid: int) -> tuple[float, int]:
    """(cpu seconds, peak RSS bytes) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = next(
        int(line.split()[1]) * 1024
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmHWM")
    )
    return cpu, hwm


def scrape(port: int) -> dict[str, float]:
    """Every sample of the operator's /metrics, by name with its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if line and line[0] != "#"}


def metric(port: int, name: str) -> float:
    return scrape(port).get(name, 0.0)


REQUEST_SAMPLE = re.compile(r'twlegal_api_requests_total\{resource="(?P<resource>[^"]*)",verb="(?P<verb>[A-Z]+)"\}')


class Counts:
    """The operator's API requests (by verb and resource) and reconciles at one moment."""

    def __init__(self, port: int):
        samples = scrape(port)
        self.requests: Counter = Counter()
        for key, value in samples.items():
            if match := REQUEST_SAMPLE.fullmatch(key):
                self.requests[f"{match['verb']} {match['resource']}"] += value
        self.reconciles = samples.get("twlegal_reconcile_duration_seconds_count", 0.0)

    @classmethod
    def zero(cls) -> Counts:
        counts = cls.__new__(cls)
        counts.requests, counts.reconciles = Counter(), 0.0
        return counts

    def since(self, before: Counts) -> dict:
        by_kind = {key: int(self.requests[key] - before.requests[key]) for key in sorted(self.requests)}
        by_verb: Counter = Counter()
        for key, n in by_kind.items():
            by_verb[key.split()[0]] += n
        return {
            "api_requests": sum(by_verb.values()),
            "api_requests_by_verb": {verb: n for verb, n in sorted(by_verb.items()) if n},
            "api_requests_by_resource": {key: n for key, n in by_kind.items() if n},
            "reconciles": int(self.reconciles - before.reconciles),
        }


def operator_idle(port: int, seconds: float = 5) -> bool:
    """True when the operator sent no request and ran no reconcile for `seconds`."""
    before = Counts(port)
    time.sleep(seconds)
    after = Counts(port)
    return after.requests == before.requests and after.reconciles == before.reconciles


def steady_state(pid: int, port: int, seconds: float, resync_seconds: float) -> dict:
    """The operator's average CPU and its API requests over a window (all releases settled)."""
    cpu0, _ = proc_stat(pid)
    counts0, t0 = Counts(port), time.monotonic()
    time.sleep(seconds)
    cpu1, peak = proc_stat(pid)
    window = time.monotonic() - t0
    return {
        "window_s": round(window, 1),
        "resync_periods_in_window": round(window / resync_seconds, 2),
        "cpu_cores": round((cpu1 - cpu0) / window, 4),
        **Counts(port).since(counts0),
        "peak_rss_mib": round(peak / 2**20, 1),
    }


# --- the API server alone -----------------------------------------------------------------------


def api_server_alone(api: client.ApiClient, namespace: str, n: int, workers: int) -> dict:
    """The operator's creates for N releases (its own ConfigMap and Job of each, rendered by its
    renderer), without the operator: all N submitted at once to `workers` threads, ConfigMap then Job.
    per_release: one release's two creates; from_burst_start: submitted -> its Job created (what the
    operator's create -> Job exists measures, waiting for a worker included)."""
    settings = OperatorSettings()
    pairs = []
    for i in range(n):
        objs = training.render(LegalModelRelease.from_object(release(f"api-{i}", namespace)), settings)
        pairs.append(tuple(next(o for o in objs if o["kind"] == kind) for kind in ("ConfigMap", "Job")))
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)

    def create(pair: tuple[dict, dict]) -> tuple[float, float]:
        started = time.monotonic()
        # Raw responses: the operator reads JSON too, it builds no client models.
        core.create_namespaced_config_map(namespace, pair[0], _preload_content=False).read()
        batch.create_namespaced_job(namespace, pair[1], _preload_content=False).read()
        return started, time.monotonic()

    burst = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        times = list(pool.map(create, pairs))
    return {
        "creates": 2 * n,
        "workers": workers,
        "per_release": summary([end - start for start, end in times]),
        "from_burst_start": summary([end - burst for _, end in times]),
        "wall_s": round(max(end for _, end in times) - burst, 3),
    }
