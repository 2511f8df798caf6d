"""A real node beside the local control plane: containerd 2.x, kubelet and kube-proxy, with a CNI
bridge network and a sandbox image of our own. Pods run in real containers (runc), Services get
ClusterIPs that work from the host and from pods.

Needs root, runc and iptables (Debian: `apt-get install runc iptables`). Each component is a child
process; the pids are kept in the state directory, like the control plane's, so `twlegal dev
cluster down` can stop a node another process started. Images are kept between runs (containerd's
root is never wiped by `start`); everything else is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import binaries, node_config, oci
from .controlplane import ControlPlane, free_port, kubeconfig_text
from .processes import Supervisor

READY_TIMEOUT = 180.0
DRAIN_TIMEOUT = 30.0


def node_ip() -> str:
    """The host's primary address: what pods reach the API server on (loopback is refused)."""
    out = subprocess.run(["ip", "-4", "route", "get", "1.1.1.1"], capture_output=True, text=True, check=True).stdout
    words = out.split()
    return words[words.index("src") + 1]


def missing_host_tools() -> list[str]:
    """What the node needs from the host that this project does not build."""
    missing = [tool for tool in ("runc", "iptables", "ip") if not shutil.which(tool)]
    if os.geteuid() != 0:
        missing.append("root (containerd and kubelet run as root)")
    return missing


@dataclass
class Node:
    state_dir: Path
    plane: ControlPlane
    name: str = "twlegal-node"

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.state_dir)

    @property
    def paths(self) -> node_config.NodePaths:
        # One run directory per state directory, short enough for a unix socket path.
        tag = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:10]
        return node_config.NodePaths(self.state_dir, Path("/run/twlegal") / tag)

    @property
    def logs(self) -> Path:
        return self.supervisor.logs

    @property
    def bridge(self) -> str:
        return "twl" + self.paths.run_dir.name[:8]

    # --- start -----------------------------------------------------------------------------------

    def start(self, *, detach: bool = False) -> "Node":
        missing = missing_host_tools()
        if missing:
            raise RuntimeError(f"the node needs {', '.join(missing)}")
        if not self.plane.node_ip:
            raise ValueError("the control plane must be started with node_ip for a node to join it")
        self._reset_state()
        _sysctl("net/ipv4/ip_forward", "1")
        _sysctl("net/bridge/bridge-nf-call-iptables", "1")
        self._forward_rules("-I")
        self._start_containerd(detach)
        self._import_archive(oci.single_binary_image(binaries.find("pause"), node_config.SANDBOX_IMAGE,
                                                     self.state_dir / "pause.tar"))
        self._start_kubelet(detach)
        self._start_kube_proxy(detach)
        self._wait_ready()
        return self

    def _reset_state(self) -> None:
        """Wipe everything but containerd's root (the imported images)."""
        paths = self.paths
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _unmount_under(self.state_dir)
        _unmount_under(paths.run_dir)
        for child in self.state_dir.iterdir():
            if child.name == "containerd":
                continue
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink()
        shutil.rmtree(paths.run_dir, ignore_errors=True)
        for directory in (paths.containerd_root, paths.run_dir, paths.cni_conf_dir, paths.cni_ipam_dir,
                          paths.kubelet_dir, self.logs):
            directory.mkdir(parents=True, exist_ok=True)

    def _forward_rules(self, action: str) -> None:
        """Let traffic through the pods' bridge: a Docker engine on the same host sets the FORWARD
        policy to DROP, which would cut pod-to-pod (and so Service) traffic."""
        for direction in ("-i", "-o"):
            rule = ["FORWARD", direction, self.bridge, "-j", "ACCEPT", "-m", "comment", "--comment", "twlegal node"]
            exists = subprocess.run(["iptables", "-C", *rule], capture_output=True).returncode == 0
            if (action == "-I") != exists:
                subprocess.run(["iptables", action, *rule], capture_output=True, check=action == "-I")

    def _start_containerd(self, detach: bool) -> None:
        paths = self.paths
        paths.containerd_config.write_text(node_config.containerd_config(
            paths, cni_bin_dir=binaries.cni_dir(), runc=Path(shutil.which("runc") or "runc")))
        (paths.cni_conf_dir / "10-twlegal.conflist").write_text(
            json.dumps(node_config.cni_network(paths, bridge=self.bridge), indent=2))
        containerd = binaries.find("containerd")
        binaries.find("containerd-shim-runc-v2")
        env = {**os.environ, "PATH": f"{containerd.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        self.supervisor.spawn("containerd", [str(containerd), "--config", str(paths.containerd_config)],
                              detach=detach, env=env)
        deadline = time.monotonic() + 60
        while self.ctr("version", check=False).returncode != 0:
            self.supervisor.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"containerd did not answer on {paths.containerd_socket}; see {self.logs}")
            time.sleep(0.3)

    def _start_kubelet(self, detach: bool) -> None:
        paths, plane = self.paths, self.plane
        certs = plane.certificates
        cert, key = certs.issue_client(f"kubelet-{self.name}", f"system:node:{self.name}", "system:nodes")
        paths.kubelet_kubeconfig.write_text(
            kubeconfig_text(plane.server(), certs.ca_cert, cert=cert, key=key, user=f"system:node:{self.name}"))
        paths.kubelet_config.write_text(json.dumps(node_config.kubelet_config(
            paths, ca_file=certs.ca_cert, port=free_port(), healthz_port=free_port()), indent=2))
        self.supervisor.spawn("kubelet", [
            str(binaries.find("kubelet")), "--config", str(paths.kubelet_config),
            "--kubeconfig", str(paths.kubelet_kubeconfig), "--root-dir", str(paths.kubelet_dir),
            "--cert-dir", str(paths.kubelet_dir / "pki"), "--hostname-override", self.name,
            "--node-ip", plane.node_ip or "", "--v", "1",
        ], detach=detach)

    def _start_kube_proxy(self, detach: bool) -> None:
        paths, plane = self.paths, self.plane
        certs = plane.certificates
        cert, key = certs.issue_client("kube-proxy", "system:kube-proxy")
        paths.kube_proxy_kubeconfig.write_text(
            kubeconfig_text(plane.server(), certs.ca_cert, cert=cert, key=key, user="system:kube-proxy"))
        paths.kube_proxy_config.write_text(json.dumps(node_config.kube_proxy_config(
            paths, hostname=self.name, healthz_port=free_port(), metrics_port=free_port()), indent=2))
        self.supervisor.spawn("kube-proxy", [str(binaries.find("kube-proxy")), "--config", str(paths.kube_proxy_config)],
                    detach=detach)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self.supervisor.check_alive()
            node = self.plane.get(f"/api/v1/nodes/{self.name}")
            conditions = {c["type"]: c for c in (node or {}).get("status", {}).get("conditions", [])}
            if conditions.get("Ready", {}).get("status") == "True":
                return
            time.sleep(1)
        raise TimeoutError(f"node {self.name} not Ready after {READY_TIMEOUT}s; see {self.logs}")

    # --- images ----------------------------------------------------------------------------------

    def ctr(self, *args: str, check: bool = True, stdin=None) -> subprocess.CompletedProcess:
        return subprocess.run([str(binaries.find("ctr")), "--address", str(self.paths.containerd_socket),
                               "--namespace", "k8s.io", *args], stdin=stdin, capture_output=True, text=stdin is None,
                              check=check)

    def _import_archive(self, archive: Path) -> None:
        with archive.open("rb") as stream:
            self.ctr("images", "import", "--local", "--discard-unpacked-layers", "-", stdin=stream)

    def load_docker_images(self, references: list[str], docker: str = "docker") -> list[str]:
        """Import images from a Docker engine (`docker save | ctr images import`), skipping those
        whose Docker image id was imported before. Returns the references imported now."""
        record_file = self.paths.containerd_root.parent / "imported.json"
        record = json.loads(record_file.read_text()) if record_file.exists() else {}
        present = set(self.ctr("images", "list", "--quiet").stdout.split())
        imported = []
        for reference in references:
            image_id = subprocess.run([docker, "image", "inspect", "--format", "{{.Id}}", reference],
                                      capture_output=True, text=True, check=True).stdout.strip()
            qualified = _qualified(reference)
            if record.get(qualified) == image_id and qualified in present:
                continue
            save = subprocess.Popen([docker, "save", reference], stdout=subprocess.PIPE)
            self.ctr("images", "import", "--local", "--discard-unpacked-layers", "-", stdin=save.stdout)
            if save.wait() != 0:
                raise RuntimeError(f"docker save {reference} failed")
            record[qualified] = image_id
            record_file.write_text(json.dumps(record, indent=2))
            imported.append(reference)
        return imported

    # --- stop ------------------------------------------------------------------------------------

    def running(self) -> dict[str, bool]:
        return self.supervisor.running()

    def stop(self) -> None:
        """Stop every container, then kube-proxy (removing its rules), kubelet and containerd, and
        unmount what they mounted; the images stay."""
        containerd = self.supervisor.recorded().get("containerd")
        if containerd and self.supervisor.alive("containerd", containerd):
            self.supervisor.stop(["kubelet"], timeout=20)  # first, or it restarts what is killed
            self._kill_all_tasks()
        self.supervisor.stop(timeout=20)
        subprocess.run([str(binaries.find("kube-proxy", build=False)), "--cleanup"], capture_output=True, check=False)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, check=False)
        self._forward_rules("-D")
        _unmount_under(self.state_dir)
        _unmount_under(self.paths.run_dir)

    def _kill_all_tasks(self) -> None:
        # Pod sandboxes and containers: without kubelet nobody else will stop them.
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            listed = self.ctr("tasks", "list", "--quiet", check=False)
            tasks = listed.stdout.split() if listed.returncode == 0 else []
            if not tasks:
                return
            for task in tasks:
                self.ctr("tasks", "delete", "--force", task, check=False)


def _qualified(reference: str) -> str:
    """How containerd names a Docker image reference (docker.io/library/... for short names)."""
    name = reference.split("/")
    if len(name) == 1:
        return f"docker.io/library/{reference}"
    if "." not in name[0] and ":" not in name[0] and name[0] != "localhost":
        return f"docker.io/{reference}"
    return reference


def _sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key
    if path.exists() and path.read_text().strip() != value:
        path.write_text(value)


def _unmount_under(directory: Path) -> None:
    """Lazily unmount every mount below `directory`, deepest first (kubelet's volumes, netns)."""
    prefix = str(directory.resolve()) + "/"
    mounts = [line.split()[1].encode().decode("unicode_escape") for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
