"""A real node beside the local control plane: containerd 2.x, kubelet and kube-proxy, with a CNI
bridge network and a sandbox image of our own. Pods run in real containers (runc), Services get
ClusterIPs that work from pods and from the host.

The node runs in a network namespace of its own, with its own pod and Service ranges and its own
cgroup root (node_config.ClusterNetwork says why), so nodes of several dev clusters run on one
host at once: `make demo`'s cluster stays up while `make test` starts the e2e tier's.

Needs root, runc, iptables, iproute2 and nsenter (Debian: `apt-get install runc iptables
iproute2 util-linux`). Each component is a child process; the pids are kept in the state
directory, like the control plane's, so `twlegal dev cluster down` can stop a node another
process started. Images are kept between runs (containerd's root is never wiped by `start`);
everything else is, and `stop` leaves nothing on the host: no namespace, link, route, iptables
rule or cgroup of the node's.
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

from . import binaries, network, node_config, oci
from .controlplane import ControlPlane, free_port, kubeconfig_text
from .processes import Supervisor

READY_TIMEOUT = 180.0
DRAIN_TIMEOUT = 30.0


class NetworkInUse(RuntimeError):
    """Another running node has this cluster's network (its namespace, ranges and names)."""


def missing_host_tools() -> list[str]:
    """What the node needs from the host that this project does not build."""
    missing = [tool for tool in ("runc", "iptables", "iptables-save", "ip", "nsenter") if not shutil.which(tool)]
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
    def network(self) -> node_config.ClusterNetwork:
        return self.plane.network

    @property
    def _legacy_bridge(self) -> str:
        """The bridge a node made in the host's namespace before nodes had namespaces."""
        return "twl" + self.paths.run_dir.name[:8]

    # --- start -----------------------------------------------------------------------------------

    def start(self, *, detach: bool = False) -> Node:
        missing = missing_host_tools()
        if missing:
            raise RuntimeError(f"the node needs {', '.join(missing)}")
        if not self.plane.node:
            raise ValueError("the control plane must be started with node=True for a node to join it")
        if any(self.running().values()):
            self.stop()  # this node's own processes, left by a run that did not stop them
        net = self.network
        self._claim_network(net)
        self._reset_state()
        network.create(net, self.state_dir)
        _make_cgroup(net.cgroup_root)
        self._start_containerd(detach)
        self._import_archive(
            oci.single_binary_image(binaries.find("pause"), node_config.SANDBOX_IMAGE, self.state_dir / "pause.tar")
        )
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
        for directory in (
            paths.containerd_root,
            paths.run_dir,
            paths.cni_conf_dir,
            paths.cni_ipam_dir,
            paths.kubelet_dir,
            self.logs,
        ):
            directory.mkdir(parents=True, exist_ok=True)

    def _claim_network(self, net: node_config.ClusterNetwork) -> None:
        """Refuse a network another running node has; clear what a crashed run of ours left."""
        if net.netns_path.exists():
            holder = network.owner(net)
            if holder != self.state_dir.resolve() and network.netns_pids(net):
                raise NetworkInUse(network.in_use_message(net, holder))
        network.delete(net)  # idempotent: also a half-made link or rules of a start that failed
        _remove_cgroup(net.cgroup_root)

    def _spawn(self, name: str, argv: list[str], *, detach: bool, env: dict | None = None) -> None:
        """A node process, inside the node's network namespace (and the host's mount namespace)."""
        self.supervisor.spawn(name, self.network.in_netns(argv), detach=detach, env=env)

    def _start_containerd(self, detach: bool) -> None:
        paths = self.paths
        paths.containerd_config.write_text(
            node_config.containerd_config(
                paths, cni_bin_dir=binaries.cni_dir(), runc=Path(shutil.which("runc") or "runc")
            )
        )
        (paths.cni_conf_dir / "10-twlegal.conflist").write_text(
            json.dumps(node_config.cni_network(paths, self.network), indent=2)
        )
        containerd = binaries.find("containerd")
        binaries.find("containerd-shim-runc-v2")
        env = {**os.environ, "PATH": f"{containerd.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        self._spawn("containerd", [str(containerd), "--config", str(paths.containerd_config)], detach=detach, env=env)
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
        # The API server as the node's namespace reaches it (127.0.0.1 there is the namespace's own).
        paths.kubelet_kubeconfig.write_text(
            kubeconfig_text(plane.server_for_node(), certs.ca_cert, cert=cert, key=key, user=f"system:node:{self.name}")
        )
        paths.kubelet_config.write_text(
            json.dumps(
                node_config.kubelet_config(
                    paths, self.network, ca_file=certs.ca_cert, port=free_port(), healthz_port=free_port()
                ),
                indent=2,
            )
        )
        self._spawn(
            "kubelet",
            [
                str(binaries.find("kubelet")),
                "--config",
                str(paths.kubelet_config),
                "--kubeconfig",
                str(paths.kubelet_kubeconfig),
                "--root-dir",
                str(paths.kubelet_dir),
                "--cert-dir",
                str(paths.kubelet_dir / "pki"),
                "--hostname-override",
                self.name,
                "--node-ip",
                self.network.node_ip,
                "--v",
                "1",
            ],
            detach=detach,
        )

    def _start_kube_proxy(self, detach: bool) -> None:
        paths, plane = self.paths, self.plane
        certs = plane.certificates
        cert, key = certs.issue_client("kube-proxy", "system:kube-proxy")
        paths.kube_proxy_kubeconfig.write_text(
            kubeconfig_text(plane.server_for_node(), certs.ca_cert, cert=cert, key=key, user="system:kube-proxy")
        )
        paths.kube_proxy_config.write_text(
            json.dumps(
                node_config.kube_proxy_config(
                    paths, self.network, hostname=self.name, healthz_port=free_port(), metrics_port=free_port()
                ),
                indent=2,
            )
        )
        self._spawn(
            "kube-proxy", [str(binaries.find("kube-proxy")), "--config", str(paths.kube_proxy_config)], detach=detach
        )

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
        return subprocess.run(
            [str(binaries.find("ctr")), "--address", str(self.paths.containerd_socket), "--namespace", "k8s.io", *args],
            stdin=stdin,
            capture_output=True,
            text=stdin is None,
            check=check,
        )

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
            image_id = subprocess.run(
                [docker, "image", "inspect", "--format", "{{.Id}}", reference],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
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
        """Stop every container, then kube-proxy, kubelet and containerd, unmount what they
        mounted, and remove the namespace (with kube-proxy's rules and the pods' bridge), the link,
        the host's rules and the cgroups; the images stay."""
        containerd = self.supervisor.recorded().get("containerd")
        if containerd and self.supervisor.alive("containerd", containerd):
            self.supervisor.stop(["kubelet"], timeout=20)  # first, or it restarts what is killed
            self._kill_all_tasks()
        self.supervisor.stop(timeout=20)
        _unmount_under(self.state_dir)
        _unmount_under(self.paths.run_dir)
        net = network.load(self.plane.state_dir)
        if net is not None and network.owner(net) in (None, self.state_dir.resolve()):
            network.delete(net)
            _remove_cgroup(net.cgroup_root)
        self._remove_legacy()

    def _remove_legacy(self) -> None:
        """What a node made in the host's namespace before nodes had namespaces of their own."""
        if not Path("/sys/class/net", self._legacy_bridge).exists():
            return
        subprocess.run([str(binaries.find("kube-proxy", build=False)), "--cleanup"], capture_output=True, check=False)
        subprocess.run(["ip", "link", "delete", self._legacy_bridge], capture_output=True, check=False)
        for direction in ("-i", "-o"):
            subprocess.run(
                [
                    "iptables",
                    "-D",
                    "FORWARD",
                    direction,
                    self._legacy_bridge,
                    "-j",
                    "ACCEPT",
                    "-m",
                    "comment",
                    "--comment",
                    "twlegal node",
                ],
                capture_output=True,
                check=False,
            )

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


def _cgroup_mounts() -> list[Path]:
    """The mount points of every cgroup hierarchy (v1 ones, and v2's in hybrid mode)."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2"):
            mounts.append(Path(fields[4]))
    return mounts


def _make_cgroup(root: str) -> None:
    """kubelet's cgroupRoot in every hierarchy: kubelet refuses a root that does not exist."""
    for mount in _cgroup_mounts():
        directory = mount / root.lstrip("/")
        directory.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):  # a v1 cpuset starts empty: no task could run in it
            if (directory / name).exists() and not (directory / name).read_text().strip():
                (directory / name).write_text((mount / name).read_text())


def _remove_cgroup(root: str) -> list[Path]:
    """Remove the cgroup root and everything kubelet made below it (all empty once the node's
    processes are gone), deepest first. Returns what could not be removed."""
    left = []
    for mount in _cgroup_mounts():
        top = mount / root.lstrip("/")
        if not top.is_dir():
            continue
        for directory, _subdirs, _files in sorted(os.walk(top), key=lambda entry: len(entry[0]), reverse=True):
            try:
                os.rmdir(directory)
            except OSError:
                left.append(Path(directory))
    return left


def cgroup_leftovers(root: str) -> list[Path]:
    return [mount / root.lstrip("/") for mount in _cgroup_mounts() if (mount / root.lstrip("/")).exists()]


def _unmount_under(directory: Path) -> None:
    """Lazily unmount every mount below `directory`, deepest first (kubelet's volumes, netns)."""
    prefix = str(directory.resolve()) + "/"
    mounts = [
        line.split()[1].encode().decode("unicode_escape") for line in Path("/proc/mounts").read_text().splitlines()
    ]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
