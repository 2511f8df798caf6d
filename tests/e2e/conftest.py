"""Fixtures of the end-to-end tier: the whole product in real pods on a real node.

TWLEGAL_E2E_CLUSTER=local (default) starts the control plane and a node (containerd, kubelet,
kube-proxy) on this host: it needs root, runc, iptables and a Docker engine to build the images
(`hack/ensure-host.sh` installs and starts them on Debian). TWLEGAL_E2E_CLUSTER=kind uses an
existing kind cluster (see hack/e2e-kind.sh). Without the prerequisites the tier is skipped on a
laptop and fails in CI (CI=true).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.cluster import in_ci
from twlegal_dev import binaries
from twlegal_dev import scenario as steps


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"e2e tier prerequisite missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _check_prerequisites() -> None:
    if os.environ.get("TWLEGAL_E2E_CLUSTER", "local") == "local":
        from twlegal_dev.node import missing_host_tools

        missing = missing_host_tools()
        if missing:
            _unavailable(f"a local node needs {', '.join(missing)} (hack/ensure-host.sh)")
    if subprocess.run([steps.DOCKER, "info"], capture_output=True).returncode != 0:
        _unavailable(f"no running Docker engine ({steps.DOCKER} info failed): hack/ensure-host.sh starts one")


@pytest.fixture(scope="session")
def local_node_host() -> None:
    """This host can run dev clusters with nodes: for the tests of the dev cluster itself
    (test_dev_clusters.py), which need no Docker engine unless they ask for images too."""
    if os.environ.get("TWLEGAL_E2E_CLUSTER", "local") != "local":
        pytest.skip("the local dev cluster's own tests run with TWLEGAL_E2E_CLUSTER=local")
    from twlegal_dev.node import missing_host_tools

    missing = missing_host_tools()
    if missing:
        _unavailable(f"a local node needs {', '.join(missing)} (hack/ensure-host.sh)")
    try:
        for name in (*binaries.CONTROL_PLANE, *binaries.NODE):
            binaries.find(name)
        binaries.cni_dir()
    except (FileNotFoundError, subprocess.CalledProcessError, OSError) as exc:
        _unavailable(f"no node binaries and they could not be built: {exc}")


@pytest.fixture(scope="package")
def images() -> dict[str, str]:
    """The CPU images, built from their Dockerfiles (Docker's cache makes a rebuild seconds)."""
    _check_prerequisites()
    started = time.monotonic()
    refs = steps.build_images()
    TIMINGS["images_build_seconds"] = round(time.monotonic() - started, 1)
    return refs


TIMINGS: dict[str, float] = {}


# Package scope: the cluster stops when the e2e tests are done, not at the end of the whole run.
@pytest.fixture(scope="package")
def e2e(request, images) -> steps.E2ECluster:
    started = time.monotonic()
    # Under the cache, not a temporary directory: the node's imported images are reused next run.
    cluster = steps.start_cluster(binaries.cache_dir() / "clusters" / "e2e")
    try:
        loading = time.monotonic()
        cluster.load_images(list(images.values()))
        cluster.timings.update(TIMINGS, images_load_seconds=round(time.monotonic() - loading, 1))
        steps.install_chart(cluster, images)
        steps.create_model_volume(cluster, images)
        steps.seed_volume(cluster)
        cluster.timings["setup_seconds"] = round(time.monotonic() - started, 1)
        yield cluster
    finally:
        if request.session.testsfailed:
            out = Path(os.environ.get("TWLEGAL_E2E_DIAGNOSTICS", "/tmp/twlegal-e2e-diagnostics"))
            shutil.rmtree(out, ignore_errors=True)
            steps.dump_diagnostics(cluster, out)
            print(f"\ne2e diagnostics in {out}")
        print(f"\ne2e timings: {cluster.timings}")
        cluster.stop()
