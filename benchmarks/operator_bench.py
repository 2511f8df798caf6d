"""Operator latency, memory, CPU and API requests against a real control plane. Prints JSON.

    python benchmarks/operator_bench.py [--releases 200] [--runs per-release,one-target]
                                        [--steady-seconds 125] [--resync-seconds 60]

Starts its own control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler),
the fake GPU node, and `twlegal operator` as a separate process (8 workers, resync at the chart's
default 60 s), then measures:
- baselines in the same run: the API server's own latency for a plain create; and the API server
  alone doing the operator's creates for N releases (a ConfigMap and a Job each, rendered by the
  operator's renderer, at the operator's concurrency), the limit create -> Job is held against;
- per-release run: create -> training Job exists, and training pod succeeded -> serving Deployment
  pinned, p50/p99, for 1 release and for N releases applied at once (no evaluation, one target each);
- one-target run: N releases of ONE target (versions v1.0.0 .. v1.0.N-1) applied at once, in their
  own namespace: create -> Job exists, the time until exactly the newest serves and all others are
  Superseded, and the operator's API requests and reconciles meanwhile;
- after each run, once settled: the operator's average CPU and API requests over --steady-seconds
  (at least two resync periods), then a SIGKILLed and restarted operator's time to settle (every
  release reconciled into its phase again) and the requests and reconciles that cost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_support import (  # noqa: E402
    GROUP,
    PLURAL,
    VERSION,
    Counts,
    Timeline,
    api_server_alone,
    metric,
    operator_idle,
    phases,
    proc_stat,
    quiet,
    ratio,
    release,
    start_operator,
    steady_state,
    storage,
    summary,
    wait,
)

from tests.support.fake_kubelet import FakeKubelet  # noqa: E402
from twlegal_dev.cli import kubectl_path  # noqa: E402
from twlegal_dev.controlplane import ControlPlane  # noqa: E402

NS, ONE_NS, API_NS = "bench", "bench-one", "bench-api"
ONE_TARGET = "one-target"
WORKERS = 8  # the operator's TWLEGAL_WORKERS, and the floor's concurrency


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--releases", type=int, default=200)
    parser.add_argument("--runs", default="per-release,one-target", help="per-release, one-target or both")
    parser.add_argument("--steady-seconds", type=float, default=125, help="steady-state window (>= 2 resyncs)")
    parser.add_argument("--resync-seconds", type=float, default=60, help="the operator's TWLEGAL_RESYNC_SECONDS")
    parser.add_argument("--settle-timeout", type=float, default=900)
    args = parser.parse_args()
    runs = {r.strip() for r in args.runs.split(",")}
    if not runs <= {"per-release", "one-target"} or not runs:
        parser.error("--runs: per-release, one-target or both")
    n = args.releases
    work = Path(tempfile.mkdtemp(prefix="twlegal-bench-"))
    log = work / "operator.log"
    result: dict = {
        "benchmark": "operator",
        "kubernetes": "v1.36.3 (etcd, kube-apiserver, kube-controller-manager, kube-scheduler on loopback)",
        "machine": {"cpus": os.cpu_count()},
        "operator": {"workers": WORKERS, "resync_seconds": args.resync_seconds, "log": str(log)},
    }
    plane = ControlPlane(work / "cp").start()
    kubectl = [kubectl_path(), "--kubeconfig", str(plane.kubeconfig)]
    operator = None
    try:
        subprocess.run([*kubectl, "apply", "--server-side", "-f", str(ROOT / "crds")], check=True, capture_output=True)
        api = config.new_client_from_config(str(plane.kubeconfig))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)

        def namespace(name: str, *, with_storage: bool = True) -> None:
            core.create_namespace({"metadata": {"name": name}})
            if with_storage:
                subprocess.run(
                    [*kubectl, "apply", "-f", "-"],
                    check=True,
                    capture_output=True,
                    text=True,
                    input=json.dumps(storage(name)),
                )
            wait(
                f"default service account in {name}",
                lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items),
                60,
            )

        namespace(NS)
        timeline = Timeline(api)
        kubelet = FakeKubelet(api, on_finish=timeline.on_finish).start()
        timeline.start()

        # Baseline: the API server's own latency for a plain create, measured in the same run.
        floor = []
        for i in range(30):
            t = time.monotonic()
            core.create_namespaced_config_map(NS, {"metadata": {"name": f"floor-{i}"}})
            floor.append(time.monotonic() - t)
        result["baseline_api_create_configmap"] = summary(floor)

        # The limit for create -> Job: the same creates without the operator (before it starts, in a
        # namespace of their own, deleted after; without its claim their pods stay unscheduled).
        namespace(API_NS, with_storage=False)
        alone = result["api_server_alone"] = api_server_alone(api, API_NS, n, WORKERS)
        core.delete_namespace(API_NS)
        try:
            wait(
                f"{API_NS} deleted",
                lambda: API_NS not in {x.metadata.name for x in core.list_namespace().items},
                180,
                1,
            )
        except TimeoutError:
            alone["namespace_still_deleting"] = True

        def start() -> tuple:
            proc, port = start_operator(plane.kubeconfig, log, resync_seconds=args.resync_seconds, workers=WORKERS)
            wait("operator metrics", lambda: metric(port, "twlegal_reconcile_errors_total") >= 0, 60)
            return proc, port

        operator, port = start()
        expected: Counter = Counter()  # phases the operator should report once settled, all namespaces

        accepted: dict[str, float] = {}  # release -> seconds the API server took to accept its create

        def create(doc: dict) -> None:
            name = doc["metadata"]["name"]
            timeline.created[name] = time.monotonic()
            custom.create_namespaced_custom_object(GROUP, VERSION, doc["metadata"]["namespace"], PLURAL, doc)
            accepted[name] = time.monotonic() - timeline.created[name]

        def serving(names: list[str]) -> bool:
            seen = phases(custom, NS)
            return all(seen.get(name) == "Serving" for name in names)

        def restart() -> dict:
            """SIGKILL the operator, start it again, time until it reports every release's phase."""
            nonlocal operator, port
            operator.kill()
            operator.wait()
            restart_started = time.monotonic()
            operator, port = start()  # its metrics answer once it holds the Lease (up to 15 s after a kill)
            up = time.monotonic() - restart_started

            def settled() -> bool:
                return all(metric(port, f'twlegal_releases{{phase="{p}"}}') >= k for p, k in expected.items())

            settle = wait("restart settles", settled, args.settle_timeout)
            out = {
                "settle_s": round(time.monotonic() - restart_started, 2),
                "up_s": round(up, 2),
                "settle_after_start_s": round(settle, 2),
            }
            out["to_settle"] = Counts(port).since(Counts.zero())
            wait("restarted operator idle", lambda: operator_idle(port), args.settle_timeout, 0)
            out["to_idle"] = {"s": round(time.monotonic() - restart_started, 2), **Counts(port).since(Counts.zero())}
            out["peak_rss_mib"] = round(proc_stat(operator.pid)[1] / 2**20, 1)
            return out

        # A warm-up release, so "one release" measures a running operator, not its start-up.
        create(release("warmup-0", NS))
        wait("warm-up release serving", lambda: serving(["warmup-0"]), 120)
        expected["Serving"] += 1

        if "per-release" in runs:
            create(release("single-0", NS))
            single_seconds = wait("one release serving", lambda: serving(["single-0"]), 120)
            result["one_release"] = {**timeline.latencies(["single-0"]), "apply_to_serving_s": round(single_seconds, 2)}

            names = [f"many-{i}" for i in range(n)]
            before, started = Counts(port), time.monotonic()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(create, [release(name, NS) for name in names]))
            wait(f"{n} releases serving", lambda: serving(names), args.settle_timeout, 0.5)
            many = result[f"{n}_releases_at_once"] = {
                "release_create_accepted": summary([accepted[name] for name in names]),
                **timeline.latencies(names),
                "apply_to_all_serving_s": round(time.monotonic() - started, 2),
                "to_all_serving": Counts(port).since(before),
            }
            expected["Serving"] += n + 1
            wait("the last status writes to settle", lambda: quiet(custom, NS), 300, 0)
            many["to_quiet"] = Counts(port).since(before)
            steady = steady_state(operator.pid, port, args.steady_seconds, args.resync_seconds)
            result["per_release_steady_state"] = {"releases_held": sum(expected.values()), **steady}
            result["operator_peak_rss_mib"] = steady["peak_rss_mib"]
            result["operator_idle_cpu_cores_with_all_serving"] = steady["cpu_cores"]
            again = result["per_release_restart"] = restart()
            result["restart_settle_s"] = again["settle_s"]
            result["restart_settle_after_start_s"] = again["settle_after_start_s"]
            result["operator_peak_rss_after_restart_mib"] = again["peak_rss_mib"]
            result.setdefault("ratios", {})["per_release"] = goal_ratios(many["create_to_job_exists"], alone)

        if "one-target" in runs:
            namespace(ONE_NS)
            names = [f"one-{i}" for i in range(n)]
            newest = names[-1]  # the highest version serves

            def settled() -> bool:
                seen = phases(custom, ONE_NS)
                return (
                    len(seen) == n
                    and seen.get(newest) == "Serving"
                    and all(seen.get(name) == "Superseded" for name in names if name != newest)
                )

            docs = [release(name, ONE_NS, target=ONE_TARGET, version=f"v1.0.{i}") for i, name in enumerate(names)]
            before, started = Counts(port), time.monotonic()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(create, docs))
            one = result[f"{n}_releases_one_target"] = {"create_to_job_exists": summary([])}
            try:
                wait(f"{n} releases of one target settled", settled, args.settle_timeout, 0.5)
            except TimeoutError:
                one["settled"] = False
                one["phases_at_timeout"] = dict(Counter(phases(custom, ONE_NS).values()))
            else:
                one["settled"] = True
            one.update(
                release_create_accepted=summary([accepted[name] for name in names]),
                create_to_job_exists=timeline.create_to_job(names),
                releases_ever_pinned=sum(name in timeline.pinned for name in names),
                apply_to_all_settled_s=round(time.monotonic() - started, 2),
                to_settle=Counts(port).since(before),
            )
            result.setdefault("ratios", {})["one_target"] = goal_ratios(one["create_to_job_exists"], alone)
            if one["settled"]:
                expected["Serving"] += 1
                expected["Superseded"] += n - 1
                wait("the last status writes to settle", lambda: quiet(custom, ONE_NS), 300, 0)
                one["to_quiet"] = Counts(port).since(before)
                steady = steady_state(operator.pid, port, args.steady_seconds, args.resync_seconds)
                one["steady_state"] = {"releases_held": sum(expected.values()), **steady}
                one["restart"] = restart()
                one["restart"]["still_settled"] = settled()

        operator.terminate()
        operator.wait(30)  # it releases its Lease while the API server is still there
        kubelet.stop()
        timeline.stop.set()
    except BaseException as exc:
        result["error"] = repr(exc)
        if operator is not None:
            operator.kill()
        raise
    finally:
        print(json.dumps(result, indent=2))
        plane.stop()


def goal_ratios(create_to_job: dict, alone: dict) -> dict:
    """The operator's create -> Job p99 over the API server's own time for the same creates."""
    return {
        "create_to_job_p99_over_api_alone_p99": ratio(create_to_job["p99_ms"], alone["from_burst_start"]["p99_ms"]),
        "create_to_job_p99_over_api_alone_wall": ratio(create_to_job["p99_ms"], alone["wall_s"] * 1000),
    }


if __name__ == "__main__":
    main()
