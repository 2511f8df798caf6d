"""Operator latency, memory and CPU against a real control plane. Prints JSON.

    python benchmarks/operator_bench.py [--releases 200]

Starts its own control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler),
the fake GPU node, and `twlegal operator` as a separate process, then measures:
- baseline: the API server's own latency for a plain create, in the same run;
- create -> training Job exists, and training pod succeeded -> serving Deployment pinned, p50/p99,
  for 1 release and for N releases applied at once (releases without evaluation, one target each);
- the operator's peak memory (VmHWM) and its CPU while idle with N releases serving (measured once
  no release has changed for 10 s);
- the time a restarted operator needs to settle all N (every release seen Serving again).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, config, watch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cases import load_example  # noqa: E402
from tests.support.fake_kubelet import FakeKubelet  # noqa: E402
from twlegal_dev.cli import kubectl_path  # noqa: E402
from twlegal_dev.controlplane import ControlPlane, free_port  # noqa: E402

NS = "bench"


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


class Timeline:
    """Arrival times (monotonic) of Jobs, pinned Deployments and finished training pods."""

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
                for event in watch.Watch().stream(list_fn, NS, timeout_seconds=30):
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

        self._watch(client.BatchV1Api(self.api).list_namespaced_job, record)

    def _watch_deployments(self) -> None:
        def record(deployment) -> None:
            release = (deployment.spec.template.metadata.labels or {}).get("twlegal.io/release")
            if release:
                self.pinned.setdefault(release, time.monotonic())

        self._watch(client.AppsV1Api(self.api).list_namespaced_deployment, record)

    def latencies(self, names: list[str]) -> dict:
        return {
            "create_to_job_exists": summary([self.job_seen[n] - self.created[n] for n in names if n in self.job_seen]),
            # The operator's share: from the Job's Complete condition to the pinned Deployment.
            "job_succeeded_to_deployment_pinned": summary(
                [self.pinned[n] - self.job_complete[n] for n in names if n in self.pinned and n in self.job_complete]
            ),
            # End to end, including the Job controller noticing the pod: pod succeeded -> pinned.
            "training_pod_succeeded_to_deployment_pinned": summary(
                [self.pinned[n] - self.trained[n] for n in names if n in self.pinned and n in self.trained]
            ),
        }


def release(name: str) -> dict:
    doc = copy.deepcopy(load_example())
    doc["metadata"] = {"name": name, "namespace": NS}
    del doc["spec"]["evaluation"]
    doc["spec"]["serving"]["target"] = name
    return doc


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


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name):
                return float(line.split()[-1])
    return 0.0


def start_operator(kubeconfig: Path, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "TWLEGAL_METRICS_PORT": str(port),
        "TWLEGAL_RESYNC_SECONDS": "300",
        "TWLEGAL_WORKERS": "8",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "twlegal.cli", "operator", "--liveness-port", "0"],
        env=env,
        stdout=open(log, "ab"),  # noqa: SIM115 - the child process owns the file
        stderr=subprocess.STDOUT,
    )
    return proc, port


def wait(what: str, predicate, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if predicate():
                return time.monotonic() - started
        except OSError:  # not listening yet
            pass
        time.sleep(0.2)
    raise TimeoutError(what)


def quiet(custom: client.CustomObjectsApi, seconds: float = 10) -> bool:
    """True when no release changed for `seconds` (resourceVersions stable)."""

    def versions() -> dict:
        items = custom.list_namespaced_custom_object("twlegal.io", "v1alpha1", NS, "legalmodelreleases")["items"]
        return {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in items}

    before = versions()
    time.sleep(seconds)
    return versions() == before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--releases", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="twlegal-bench-"))
    plane = ControlPlane(work / "cp").start()
    kubectl = [kubectl_path(), "--kubeconfig", str(plane.kubeconfig)]
    try:
        subprocess.run([*kubectl, "apply", "--server-side", "-f", str(ROOT / "crds")], check=True, capture_output=True)
        api = config.new_client_from_config(str(plane.kubeconfig))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        core.create_namespace({"metadata": {"name": NS}})
        subprocess.run(
            [*kubectl, "apply", "-f", "-"],
            check=True,
            capture_output=True,
            text=True,
            input=json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": [
                        {
                            "apiVersion": "v1",
                            "kind": "PersistentVolume",
                            "metadata": {"name": "bench-models"},
                            "spec": {
                                "capacity": {"storage": "1Gi"},
                                "accessModes": ["ReadWriteMany"],
                                "storageClassName": "manual",
                                "hostPath": {"path": "/tmp/twlegal-bench"},
                                "claimRef": {"namespace": NS, "name": "twlegal-models"},
                            },
                        },
                        {
                            "apiVersion": "v1",
                            "kind": "PersistentVolumeClaim",
                            "metadata": {"name": "twlegal-models", "namespace": NS},
                            "spec": {
                                "accessModes": ["ReadWriteMany"],
                                "storageClassName": "manual",
                                "volumeName": "bench-models",
                                "resources": {"requests": {"storage": "1Gi"}},
                            },
                        },
                    ],
                }
            ),
        )
        wait(
            "default service account",
            lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(NS).items),
            60,
        )
        timeline = Timeline(api)
        kubelet = FakeKubelet(api, on_finish=timeline.on_finish).start()
        timeline.start()

        # Baseline: the API server's own latency for a plain create, measured in the same run.
        floor = []
        for i in range(30):
            t = time.monotonic()
            core.create_namespaced_config_map(NS, {"metadata": {"name": f"floor-{i}"}})
            floor.append(time.monotonic() - t)

        operator, port = start_operator(plane.kubeconfig, work / "operator.log")
        wait("operator metrics", lambda: metric(port, "twlegal_reconcile_errors_total") >= 0, 60)

        def create(name: str) -> None:
            timeline.created[name] = time.monotonic()
            custom.create_namespaced_custom_object("twlegal.io", "v1alpha1", NS, "legalmodelreleases", release(name))

        def serving(names: list[str]) -> bool:
            items = custom.list_namespaced_custom_object("twlegal.io", "v1alpha1", NS, "legalmodelreleases")["items"]
            phases = {i["metadata"]["name"]: (i.get("status") or {}).get("phase") for i in items}
            return all(phases.get(n) == "Serving" for n in names)

        # A warm-up release, so "one release" measures a running operator, not its start-up.
        create("warmup-0")
        wait("warm-up release serving", lambda: serving(["warmup-0"]), 120)
        create("single-0")
        single_seconds = wait("one release serving", lambda: serving(["single-0"]), 120)
        single = timeline.latencies(["single-0"])

        names = [f"many-{i}" for i in range(args.releases)]
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(create, names))
        wait(f"{args.releases} releases serving", lambda: serving(names), 900)
        many_seconds = time.monotonic() - started
        many = timeline.latencies(names)

        wait("the last status writes to settle", lambda: quiet(custom), 300)
        cpu0, _ = proc_stat(operator.pid)
        time.sleep(30)
        cpu1, peak = proc_stat(operator.pid)
        idle_cpu = (cpu1 - cpu0) / 30

        operator.kill()
        operator.wait()
        restart_started = time.monotonic()
        operator, port = start_operator(plane.kubeconfig, work / "operator.log")
        total = args.releases + 2
        settle = wait("restart settles", lambda: metric(port, 'twlegal_releases{phase="Serving"}') >= total, 600)
        restart_seconds = time.monotonic() - restart_started
        _, peak_after_restart = proc_stat(operator.pid)
        operator.terminate()
        kubelet.stop()
        timeline.stop.set()
        print(
            json.dumps(
                {
                    "benchmark": "operator",
                    "kubernetes": "v1.36.3 (etcd, kube-apiserver, kube-controller-manager, kube-scheduler on loopback)",
                    "machine": {"cpus": os.cpu_count()},
                    "baseline_api_create_configmap": summary(floor),
                    "one_release": {**single, "apply_to_serving_s": round(single_seconds, 2)},
                    f"{args.releases}_releases_at_once": {**many, "apply_to_all_serving_s": round(many_seconds, 2)},
                    "operator_peak_rss_mib": round(peak / 2**20, 1),
                    "operator_idle_cpu_cores_with_all_serving": round(idle_cpu, 4),
                    "restart_settle_s": round(restart_seconds, 2),
                    "restart_settle_after_start_s": round(settle, 2),
                    "operator_peak_rss_after_restart_mib": round(peak_after_restart / 2**20, 1),
                },
                indent=2,
            )
        )
    finally:
        plane.stop()


if __name__ == "__main__":
    main()
