"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, built from upstream sources. For tests and `twlegal-dev cluster`.

Each component is a child process; the state directory holds the PKI, etcd's data, logs, the
admin kubeconfig and the pids, so `twlegal-dev cluster down` can stop a cluster another process
started.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import binaries, pki
from .processes import Supervisor

SERVICE_CIDR = "10.0.0.0/24"
READY_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kubeconfig_text(server: str, ca: Path, *, cert: Path | None = None, key: Path | None = None,
                    token: str | None = None, user: str = "admin", namespace: str | None = None) -> str:
    user_entry: dict = {}
    if cert and key:
        user_entry = {"client-certificate": str(cert), "client-key": str(key)}
    if token:
        user_entry = {"token": token}
    context: dict = {"cluster": "twlegal-dev", "user": user}
    if namespace:
        context["namespace"] = namespace
    return json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "twlegal-dev", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": "twlegal-dev", "context": context}],
        "current-context": "twlegal-dev",
    }, indent=2)


@dataclass
class ControlPlane:
    """One local control plane, identified by its state directory."""

    state_dir: Path
    # With a node: the address pods reach the API server on (it must not be loopback, which the
    # `kubernetes` Service's endpoints refuse), listened on besides loopback.
    node_ip: str | None = None

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.state_dir)

    @property
    def certificates(self) -> pki.Pki:
        return pki.Pki(self.state_dir / "pki")

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def logs(self) -> Path:
        return self.supervisor.logs

    def server(self) -> str:
        return json.loads(self.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]

    def start(self, *, detach: bool = False) -> "ControlPlane":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        certs = pki.create(self.state_dir / "pki", extra_ips=(self.node_ip,) if self.node_ip else ())
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        kcm_port, sched_port = free_port(), free_port()
        server = f"https://127.0.0.1:{api_port}"
        self.kubeconfig.write_text(kubeconfig_text(server, certs.ca_cert, cert=certs.admin_cert, key=certs.admin_key))
        etcd_data = self.state_dir / "etcd"
        self.supervisor.spawn("etcd", [
            str(binaries.find("etcd")), "--data-dir", str(etcd_data), "--name", "twlegal-dev",
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"twlegal-dev=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync", "--quota-backend-bytes", str(2 * 1024**3),
        ], detach=detach)
        self.supervisor.spawn("kube-apiserver", [
            str(binaries.find("kube-apiserver")),
            "--etcd-servers", f"http://127.0.0.1:{etcd_port}",
            "--secure-port", str(api_port), *self._address_flags(certs),
            "--tls-cert-file", str(certs.serving_cert), "--tls-private-key-file", str(certs.serving_key),
            "--client-ca-file", str(certs.ca_cert),
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(certs.sa_pub),
            "--service-account-signing-key-file", str(certs.sa_key),
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--authorization-mode", "Node,RBAC",
            "--allow-privileged=true",
            "--profiling=false",
        ], detach=detach)
        self._wait_ready(server, certs)
        self.supervisor.spawn("kube-controller-manager", [
            str(binaries.find("kube-controller-manager")),
            "--kubeconfig", str(self.kubeconfig),
            "--authentication-kubeconfig", str(self.kubeconfig),
            "--authorization-kubeconfig", str(self.kubeconfig),
            "--bind-address", "127.0.0.1", "--secure-port", str(kcm_port),
            "--service-account-private-key-file", str(certs.sa_key),
            "--root-ca-file", str(certs.ca_cert),
            "--cluster-signing-cert-file", str(certs.ca_cert),
            "--cluster-signing-key-file", str(certs.ca_key),
            "--controllers", "*", "--leader-elect=false",
            "--concurrent-deployment-syncs", "10", "--concurrent-job-syncs", "10",
            "--profiling=false",
        ], detach=detach)
        self.supervisor.spawn("kube-scheduler", [
            str(binaries.find("kube-scheduler")),
            "--kubeconfig", str(self.kubeconfig),
            "--authentication-kubeconfig", str(self.kubeconfig),
            "--authorization-kubeconfig", str(self.kubeconfig),
            "--bind-address", "127.0.0.1", "--secure-port", str(sched_port),
            "--leader-elect=false", "--profiling=false",
        ], detach=detach)
        return self

    def _address_flags(self, certs: pki.Pki) -> list[str]:
        if not self.node_ip:
            return ["--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
                    "--endpoint-reconciler-type", "none"]
        cert, key = certs.issue_client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
        return ["--bind-address", "0.0.0.0", "--advertise-address", self.node_ip,
                "--kubelet-client-certificate", str(cert), "--kubelet-client-key", str(key),
                "--kubelet-preferred-address-types", "InternalIP"]

    def _admin_tls(self, certs: pki.Pki) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(certs.ca_cert))
        context.load_cert_chain(str(certs.admin_cert), str(certs.admin_key))
        return context

    def get(self, path: str) -> dict | None:
        """GET an API path as the admin; None when it does not exist (yet)."""
        try:
            with urllib.request.urlopen(f"{self.server()}{path}", context=self._admin_tls(self.certificates),
                                        timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def _wait_ready(self, server: str, certs: pki.Pki) -> None:
        context = self._admin_tls(certs)
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            self.supervisor.check_alive()
            try:
                with urllib.request.urlopen(f"{server}/readyz", context=context, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise TimeoutError(f"kube-apiserver not ready after {READY_TIMEOUT}s: {last}")

    def running(self) -> dict[str, bool]:
        return self.supervisor.running()

    def stop(self) -> None:
        self.supervisor.stop()
