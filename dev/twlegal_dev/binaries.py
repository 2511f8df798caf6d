"""Where the upstream binaries come from: a directory the user names, or a cached build."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

K8S_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.22.0"
CONTAINERD_VERSION = "v2.4.2"
CNI_PLUGINS_VERSION = "v1.10.0"
PAUSE_VERSION = "0.1.0"
BUILD_SCRIPT = Path(__file__).with_name("build-binaries.sh")
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
# A real node (e2e tier): these plus runc, iptables and the CNI plugins (see cni_dir()).
NODE = ("containerd", "containerd-shim-runc-v2", "ctr", "kubelet", "kube-proxy", "pause")


def cache_dir() -> Path:
    return Path(os.environ.get("TWLEGAL_CACHE", Path.home() / ".cache" / "twlegal"))


def _built(name: str) -> Path:
    bin_dir = cache_dir() / "bin"
    if name == "etcd":
        return bin_dir / f"etcd-{ETCD_VERSION}" / "etcd"
    if name == "helm":
        return bin_dir / f"helm-{HELM_VERSION}-k8s-{K8S_VERSION}" / "helm"
    if name in ("containerd", "containerd-shim-runc-v2", "ctr"):
        return bin_dir / f"containerd-{CONTAINERD_VERSION}" / name
    if name == "pause":
        return bin_dir / f"pause-{PAUSE_VERSION}" / "pause"
    return bin_dir / f"kubernetes-{K8S_VERSION}" / name


def _user_dirs() -> list[Path]:
    # KUBEBUILDER_ASSETS is envtest's convention (etcd, kube-apiserver, kubectl).
    return [Path(os.environ[var]) for var in ("TWLEGAL_K8S_BIN_DIR", "KUBEBUILDER_ASSETS") if os.environ.get(var)]


def find(name: str, *, build: bool = True) -> Path:
    """The binary `name`: from a user-given directory first, then the cache (building it if asked)."""
    for directory in _user_dirs():
        if (directory / name).is_file():
            return directory / name
    path = _built(name)
    if not path.is_file() and build:
        what = {
            "etcd": "etcd",
            "helm": "helm",
            "containerd": "containerd",
            "ctr": "containerd",
            "containerd-shim-runc-v2": "containerd",
            "pause": "pause",
        }.get(name, "kubernetes")
        _build(what)
    if not path.is_file():
        raise FileNotFoundError(f"{name} not found in {[str(d) for d in _user_dirs()]} nor at {path}")
    return path


def cni_dir() -> Path:
    """The CNI plugins (bridge, host-local, loopback, portmap), built from the Go module proxy."""
    directory = cache_dir() / "bin" / f"cni-plugins-{CNI_PLUGINS_VERSION}"
    if not (directory / "bridge").is_file():
        _build("cni")
    return directory


def _build(what: str) -> None:
    subprocess.run(
        ["bash", str(BUILD_SCRIPT), what],
        check=True,
        env={
            **os.environ,
            "K8S_VERSION": K8S_VERSION,
            "ETCD_VERSION": ETCD_VERSION,
            "HELM_VERSION": HELM_VERSION,
            "CONTAINERD_VERSION": CONTAINERD_VERSION,
            "CNI_PLUGINS_VERSION": CNI_PLUGINS_VERSION,
            "PAUSE_VERSION": PAUSE_VERSION,
        },
    )
