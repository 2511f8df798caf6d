"""Run `twlegal operator` as its own process, with exactly the chart's service account and RBAC."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from twlegal_dev import binaries
from twlegal_dev.controlplane import free_port

from .cluster import ROOT, Cluster, wait_for

NAMESPACE = "twlegal-system"
HELM_RELEASE = "twlegal"
SERVICE_ACCOUNT = f"{HELM_RELEASE}-operator"
SERVICE_ACCOUNT_USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"


# The chart's operator pod has no image to run here: keep it unscheduled (a node selector no node
# matches) and run the operator as a local process with the chart's service-account token instead.
NO_IN_CLUSTER_OPERATOR = ("--set-string", "nodeSelector.twlegal\\.io/no-such-node=true")


DEFAULT_CLAIM = "twlegal-models"


def helm_install(cluster: Cluster) -> None:
    """`helm install` of charts/twlegal (the CRD comes from crds/, installed by the tests)."""
    subprocess.run(
        [
            str(binaries.find("helm")),
            "upgrade",
            "--install",
            HELM_RELEASE,
            str(ROOT / "charts" / "twlegal"),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--set",
            "crds.enabled=false",
            # Each test namespace has a claim of this name: releases that name none use it.
            "--set",
            f"storage.defaultClaim={DEFAULT_CLAIM}",
            *NO_IN_CLUSTER_OPERATOR,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--wait=false",
        ],
        check=True,
        capture_output=True,
        text=True,
    )


@dataclass
class OperatorProcess:
    cluster: Cluster
    workdir: Path
    kubeconfig: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    starts: int = 0
    # start() returns once this process acts (kopf answers /healthz, not the standby's "standing by"),
    # as the tests expect of their operator; a replica from another() may stand by instead.
    must_lead: bool = True

    @classmethod
    def install(cls, cluster: Cluster, workdir: Path) -> OperatorProcess:
        helm_install(cluster)
        token = cluster.kubectl("create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, "--duration=6h").stdout.strip()
        view = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
        server = view["clusters"][0]["cluster"]
        kubeconfig = workdir / "operator.kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": server}],
                    "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
                    "contexts": [{"name": "c", "context": {"cluster": "c", "user": SERVICE_ACCOUNT}}],
                    "current-context": "c",
                }
            )
        )
        env = {
            "TWLEGAL_ROLLOUT_DEADLINE_SECONDS": "12",
            "TWLEGAL_RESYNC_SECONDS": "5",
            "TWLEGAL_TRAINER_IMAGE": "twlegal/trainer:test",
            "TWLEGAL_SERVER_IMAGE": "twlegal/server:test",
            "TWLEGAL_DEFAULT_STORAGE_CLAIM": DEFAULT_CLAIM,
            # Leader election as the chart runs it (the Lease in the chart's namespace, POD_NAMESPACE
            # from the downward API there), with short durations: a killed operator's successor
            # waits ~7s, not ~20s.
            "POD_NAMESPACE": NAMESPACE,
            "TWLEGAL_LEASE_SECONDS": "6",
            "TWLEGAL_LEASE_RENEW_SECONDS": "4",
            "TWLEGAL_LEASE_RETRY_SECONDS": "1",
        }
        return cls(cluster, workdir, kubeconfig, env)

    @property
    def log(self) -> Path:
        return self.workdir / f"operator-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        self.metrics_port, self.liveness_port = free_port(), free_port()
        env = {
            **os.environ,
            **self.env,
            "KUBECONFIG": str(self.kubeconfig),
            "TWLEGAL_METRICS_PORT": str(self.metrics_port),
        }
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "twlegal.cli", "operator", "--liveness-port", str(self.liveness_port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_for("the operator's /healthz", lambda: self._healthy(), timeout=60)

    def _healthy(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as resp:
            return resp.status == 200 and not (self.must_lead and resp.read().startswith(b"standing by"))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as when a node dies."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def another(self, name: str) -> OperatorProcess:
        """A second operator process on the same install (kubeconfig, env): a replica, for the leader
        election tests. Not started; its logs go to a folder of its own."""
        workdir = self.workdir / name
        workdir.mkdir(exist_ok=True)
        return OperatorProcess(self.cluster, workdir, self.kubeconfig, dict(self.env), must_lead=False)

    @property
    def identity(self) -> str:
        """Its Lease identity, as it logged it ("candidate <identity> for Lease ...")."""
        for line in self.logs().splitlines():
            if "candidate " in line and " for Lease " in line:
                return line.split("candidate ", 1)[1].split(" for Lease ", 1)[0]
        raise AssertionError(f"no Lease candidate line in {self.log}:\n{self.logs()[-2000:]}")
