"""Fixtures of the integration tier: a real control plane, the CRD, a fake GPU node, the operator.

Where the control plane comes from, in this order:
1. an existing cluster, only with an explicit opt-in: TWLEGAL_TEST_KUBECONFIG=path and
   TWLEGAL_TEST_EXISTING_CLUSTER=1 (it must be a throwaway cluster: a fake node is registered);
2. binaries in TWLEGAL_K8S_BIN_DIR or KUBEBUILDER_ASSETS;
3. binaries built from the Go module proxy and cached under ~/.cache/twlegal/bin.
Without any of them the tier is skipped on a laptop and fails in CI (CI=true).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.support.cluster import ROOT, Cluster, api_client, in_ci, wait_for
from tests.support.fake_kubelet import FakeKubelet
from tests.support.operator import OperatorProcess
from twlegal_dev import binaries
from twlegal_dev.controlplane import ControlPlane

CRD_FILE = ROOT / "crds" / "twlegal.io_legalmodelreleases.yaml"


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"integration tier prerequisite missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    existing = os.environ.get("TWLEGAL_TEST_KUBECONFIG")
    if existing and os.environ.get("TWLEGAL_TEST_EXISTING_CLUSTER") == "1":
        yield Cluster(Path(existing), api_client(Path(existing)))
        return
    try:
        for name in binaries.CONTROL_PLANE:
            binaries.find(name)
    except (FileNotFoundError, subprocess.CalledProcessError, OSError) as exc:
        _unavailable(f"no Kubernetes binaries and they could not be built: {exc}")
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"))
    plane.start()
    try:
        yield Cluster(plane.kubeconfig, api_client(plane.kubeconfig))
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--field-manager=twlegal-tests", "-f", str(CRD_FILE))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/legalmodelreleases.twlegal.io")


@pytest.fixture(scope="session")
def fake_node(cluster: Cluster) -> FakeKubelet:
    kubelet = FakeKubelet(cluster.api).start()
    yield kubelet
    kubelet.stop()


@pytest.fixture(scope="session")
def operator(cluster: Cluster, crd, fake_node, tmp_path_factory) -> OperatorProcess:
    proc = OperatorProcess.install(cluster, tmp_path_factory.mktemp("operator"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def namespace(cluster: Cluster) -> str:
    """A fresh namespace with the model-storage PVC bound to a PV of its own."""
    name = f"t-{secrets.token_hex(3)}"
    cluster.apply(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"{name}-models"},
                "spec": {
                    "capacity": {"storage": "10Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "manual",
                    "hostPath": {"path": f"/tmp/twlegal-{name}"},
                    "claimRef": {"namespace": name, "name": "twlegal-models"},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "twlegal-models", "namespace": name},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "manual",
                    "volumeName": f"{name}-models",
                    "resources": {"requests": {"storage": "10Gi"}},
                },
            },
        ]
    )
    wait_for(
        "the default service account",
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
    cluster.kubectl("delete", "pv", f"{name}-models", "--wait=false", check=False)
