"""`twlegal-dev cluster up|status|down`, as a user runs it (the control plane alone; the node's
side, two clusters at once and a restart with in-cluster clients, is in tests/e2e/test_dev_clusters.py)."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.cluster import KUBECTL


def twlegal_dev(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twlegal_dev", *args], capture_output=True, text=True, timeout=300)


def server_of(kubeconfig: Path) -> str:
    return json.loads(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]


def test_dev_cluster_up_status_down_up(cluster):  # `cluster`: the binaries exist (or the tier failed already)
    name = f"test-{secrets.token_hex(3)}"
    up = twlegal_dev("cluster", "up", "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        kubeconfig = Path(up.stdout.strip())
        assert kubeconfig.is_file()
        assert twlegal_dev("cluster", "status", "--name", name).returncode == 0
        again = twlegal_dev("cluster", "up", "--name", name)
        assert again.stdout.strip() == str(kubeconfig) and "already running" in again.stderr
        crd = subprocess.run(
            [KUBECTL, "--kubeconfig", str(kubeconfig), "get", "crd", "legalmodelreleases.twlegal.io"],
            capture_output=True,
            text=True,
        )
        assert crd.returncode == 0, crd.stderr

        # `down` then `up`: the same ports (ports.json), the same data; what a node's pods need.
        server = server_of(kubeconfig)
        stopped = twlegal_dev("cluster", "down", "--name", name)
        assert stopped.returncode == 0 and f"up --name {name}" in stopped.stderr, stopped.stderr
        assert twlegal_dev("cluster", "status", "--name", name).returncode == 1
        restarted = twlegal_dev("cluster", "up", "--name", name)
        assert restarted.returncode == 0, restarted.stderr
        assert server_of(kubeconfig) == server
        crd = subprocess.run(
            [KUBECTL, "--kubeconfig", str(kubeconfig), "get", "crd", "legalmodelreleases.twlegal.io"],
            capture_output=True,
            text=True,
        )
        assert crd.returncode == 0, crd.stderr
    finally:
        down = twlegal_dev("cluster", "down", "--name", name, "--delete")
    assert down.returncode == 0
    status = twlegal_dev("cluster", "status", "--name", name)
    assert status.returncode == 1 and "not running" in status.stdout


def test_a_restart_keeps_its_ports_and_replaces_only_one_that_was_taken():
    from twlegal_dev.controlplane import PORTS, choose_ports

    first = choose_ports({})
    assert set(first) == set(PORTS) and len(set(first.values())) == len(PORTS)
    assert choose_ports(first) == first
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first["kube-apiserver"]))
        squatter.listen()
        moved = choose_ports(first)
    assert moved["kube-apiserver"] != first["kube-apiserver"]
    assert {k: v for k, v in moved.items() if k != "kube-apiserver"} == {
        k: v for k, v in first.items() if k != "kube-apiserver"
    }
