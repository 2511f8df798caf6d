"""`twlegal-dev cluster up|status|down`, as a user runs it."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from tests.support.cluster import KUBECTL


def twlegal_dev(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twlegal_dev", *args], capture_output=True, text=True, timeout=300)


def test_dev_cluster_up_status_down(cluster):  # `cluster`: the binaries exist (or the tier failed already)
    name = f"test-{secrets.token_hex(3)}"
    up = twlegal_dev("cluster", "up", "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        kubeconfig = Path(up.stdout.strip())
        assert kubeconfig.is_file()
        assert twlegal_dev("cluster", "status", "--name", name).returncode == 0
        again = twlegal_dev("cluster", "up", "--name", name)
        assert again.stdout.strip() == str(kubeconfig) and "already running" in again.stderr
        crd = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), "get", "crd", "legalmodelreleases.twlegal.io"],
                             capture_output=True, text=True)
        assert crd.returncode == 0, crd.stderr
    finally:
        down = twlegal_dev("cluster", "down", "--name", name, "--delete")
    assert down.returncode == 0
    status = twlegal_dev("cluster", "status", "--name", name)
    assert status.returncode == 1 and "not running" in status.stdout
