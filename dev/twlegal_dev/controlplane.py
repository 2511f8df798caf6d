"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, built from upstream sources. For tests and `twlegal-dev cluster`.

Each component is a child process; the state directory holds the PKI, etcd's data, logs, the
admin kubeconfig and the pids, so `twlegal-dev cluster down` can stop a cluster another process
started.

A cluster survives `down` and `up`: its ports (ports.json) and its network (network.json: the
Service range, see node_config.ClusterNetwork) are chosen at the first start and kept. The ports
matter because the API server writes the `kubernetes` Endpoints' port only when it creates them
(its reconciler runs with reconcilePorts=false, pkg/controlplane/controller/kubernetesservice):
after a restart on another port every in-cluster client would dial the old one. A kept port that
another program took meanwhile is replaced, and the Endpoints and EndpointSlice are rewritten.
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
from typing import Any

from . import binaries, network, pki
from .node_config import ClusterNetwork
from .processes import Supervisor

READY_TIMEOUT = 120.0
PORTS = ("etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether a server can listen on `port` on every address (as the API server does: with
    SO_REUSEADDR, so the last run's connections in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def choose_ports(saved: dict[str, int]) -> dict[str, int]:
    """The saved ports where they are still free, new ones for the rest."""
    ports: dict[str, int] = {}
    for name in PORTS:
        port = saved.get(name)
        if not port or port in ports.values() or not port_free(port):
            port = free_port()
            while port in ports.values():
                port = free_port()
        ports[name] = port
    return ports


def kubeconfig_text(
    server: str,
    ca: Path,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
    user: str = "admin",
    namespace: str | None = None,
) -> str:
    user_entry: dict = {}
    if cert and key:
        user_entry = {"client-certificate": str(cert), "client-key": str(key)}
    if token:
        user_entry = {"token": token}
    context: dict = {"cluster": "twlegal-dev", "user": user}
    if namespace:
        context["namespace"] = namespace
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "twlegal-dev", "cluster": {"server": server, "certificate-authority": str(ca)}}],
            "users": [{"name": user, "user": user_entry}],
            "contexts": [{"name": "twlegal-dev", "context": context}],
            "current-context": "twlegal-dev",
        },
        indent=2,
    )


@dataclass
class ControlPlane:
    """One local control plane, identified by its state directory."""

    state_dir: Path
    # With a node: listen on every address, since the node (in a network namespace of its own)
    # dials its network's host_ip, and advertise host_ip in the `kubernetes` Endpoints (loopback,
    # the address without a node, is refused there and would be the pod's own anyway).
    node: bool = False

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

    @property
    def ports_file(self) -> Path:
        return self.state_dir / "ports.json"

    @property
    def network(self) -> ClusterNetwork:
        """This cluster's network (chosen at the first start, or now)."""
        return network.load(self.state_dir) or network.allocate(self.state_dir)

    def server(self) -> str:
        return json.loads(self.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]

    def api_port(self) -> int:
        return int(self.server().rsplit(":", 1)[1])

    def server_for_node(self) -> str:
        """The API server as the node's namespace reaches it."""
        return f"https://{self.network.host_ip}:{self.api_port()}"

    def start(self, *, detach: bool = False) -> ControlPlane:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        net = network.allocate(self.state_dir)
        certs = pki.create(self.state_dir / "pki", ips=(net.kubernetes_service_ip, net.host_ip))
        saved = json.loads(self.ports_file.read_text()) if self.ports_file.exists() else {}
        ports = choose_ports(saved)
        self.ports_file.write_text(json.dumps(ports, indent=2))
        etcd_port, peer_port, api_port = ports["etcd"], ports["etcd-peer"], ports["kube-apiserver"]
        kcm_port, sched_port = ports["kube-controller-manager"], ports["kube-scheduler"]
        server = f"https://127.0.0.1:{api_port}"
        self.kubeconfig.write_text(kubeconfig_text(server, certs.ca_cert, cert=certs.admin_cert, key=certs.admin_key))
        etcd_data = self.state_dir / "etcd"
        self.supervisor.spawn(
            "etcd",
            [
                str(binaries.find("etcd")),
                "--data-dir",
                str(etcd_data),
                "--name",
                "twlegal-dev",
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"twlegal-dev=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--quota-backend-bytes",
                str(2 * 1024**3),
            ],
            detach=detach,
        )
        self.supervisor.spawn(
            "kube-apiserver",
            [
                str(binaries.find("kube-apiserver")),
                "--etcd-servers",
                f"http://127.0.0.1:{etcd_port}",
                "--secure-port",
                str(api_port),
                *self._address_flags(certs),
                "--tls-cert-file",
                str(certs.serving_cert),
                "--tls-private-key-file",
                str(certs.serving_key),
                "--client-ca-file",
                str(certs.ca_cert),
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file",
                str(certs.sa_pub),
                "--service-account-signing-key-file",
                str(certs.sa_key),
                "--service-cluster-ip-range",
                net.service_cidr,
                "--authorization-mode",
                "Node,RBAC",
                # As OpenShift runs it: an owner reference with blockOwnerDeletion needs `update` on the
                # owner's finalizers, so every test proves the chart's RBAC grants it.
                "--enable-admission-plugins",
                "OwnerReferencesPermissionEnforcement",
                "--allow-privileged=true",
                "--profiling=false",
            ],
            detach=detach,
        )
        self._wait_ready(server, certs)
        if self.node:
            self._repair_kubernetes_endpoints(api_port)
        self.supervisor.spawn(
            "kube-controller-manager",
            [
                str(binaries.find("kube-controller-manager")),
                "--kubeconfig",
                str(self.kubeconfig),
                "--authentication-kubeconfig",
                str(self.kubeconfig),
                "--authorization-kubeconfig",
                str(self.kubeconfig),
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(kcm_port),
                "--service-account-private-key-file",
                str(certs.sa_key),
                "--root-ca-file",
                str(certs.ca_cert),
                "--cluster-signing-cert-file",
                str(certs.ca_cert),
                "--cluster-signing-key-file",
                str(certs.ca_key),
                "--controllers",
                "*",
                "--leader-elect=false",
                "--concurrent-deployment-syncs",
                "10",
                "--concurrent-job-syncs",
                "10",
                "--profiling=false",
            ],
            detach=detach,
        )
        self.supervisor.spawn(
            "kube-scheduler",
            [
                str(binaries.find("kube-scheduler")),
                "--kubeconfig",
                str(self.kubeconfig),
                "--authentication-kubeconfig",
                str(self.kubeconfig),
                "--authorization-kubeconfig",
                str(self.kubeconfig),
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(sched_port),
                "--leader-elect=false",
                "--profiling=false",
            ],
            detach=detach,
        )
        return self

    def _address_flags(self, certs: pki.Pki) -> list[str]:
        if not self.node:
            return [
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--endpoint-reconciler-type",
                "none",
            ]
        cert, key = certs.issue_client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
        return [
            "--bind-address",
            "0.0.0.0",
            "--advertise-address",
            self.network.host_ip,
            "--kubelet-client-certificate",
            str(cert),
            "--kubelet-client-key",
            str(key),
            "--kubelet-preferred-address-types",
            "InternalIP",
        ]

    def _admin_tls(self, certs: pki.Pki) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(certs.ca_cert))
        context.load_cert_chain(str(certs.admin_cert), str(certs.admin_key))
        return context

    def get(self, path: str) -> dict[str, Any] | None:
        """GET an API path as the admin; None when it does not exist (yet)."""
        return self.request("GET", path)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """An API request as the admin; None on 404."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.server()}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data else {},
        )
        try:
            with urllib.request.urlopen(req, context=self._admin_tls(self.certificates), timeout=10) as resp:
                answer: dict[str, Any] = json.load(resp)
                return answer
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def _repair_kubernetes_endpoints(self, api_port: int) -> None:
        """Point the `kubernetes` Endpoints and EndpointSlice at this run's port, if an earlier run
        (on another port) made them: the API server never corrects their port itself. Absent, the
        API server creates them right, within its reconcile interval (10s)."""
        endpoints = self.get("/api/v1/namespaces/default/endpoints/kubernetes")
        if endpoints and any(
            port.get("port") != api_port
            for subset in endpoints.get("subsets") or []
            for port in subset.get("ports") or []
        ):
            for subset in endpoints["subsets"]:
                subset["ports"] = [{"name": "https", "port": api_port, "protocol": "TCP"}]
            self.request("PUT", "/api/v1/namespaces/default/endpoints/kubernetes", endpoints)
        path = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes"
        slice_ = self.get(path)
        if slice_ and [port.get("port") for port in slice_.get("ports") or []] != [api_port]:
            slice_["ports"] = [{"name": "https", "port": api_port, "protocol": "TCP"}]
            self.request("PUT", path, slice_)

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
        # The API server before etcd: on SIGTERM it removes its lease and endpoint from etcd, and
        # with etcd gone it waits for it until SIGKILL (15s per stop).
        self.supervisor.stop(["kube-scheduler", "kube-controller-manager", "kube-apiserver"])
        self.supervisor.stop()
