"""The local dev cluster itself, as the README's two commands use it one after the other: the demo's
cluster stays up while the e2e tier starts its own (two nodes on one host, each in a network
namespace with pod and Service ranges, bridge, kube-proxy rules and cgroups of its own), and a
cluster stopped with `down` works again after `up` (in-cluster clients reach the API server
through the `kubernetes` Service).

Real processes, as root: cluster A is started the way `make demo` starts it (`twlegal-dev cluster
up --node`, detached), cluster B the way the e2e tier does (ControlPlane and Node in this process).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, api_client, wait_for
from twlegal_dev import binaries, network, node_config
from twlegal_dev import scenario as steps
from twlegal_dev.controlplane import ControlPlane
from twlegal_dev.node import Node, cgroup_leftovers

pytestmark = pytest.mark.e2e

# Run in a pod: GET /version through the `kubernetes` Service with the pod's service-account token,
# as every in-cluster client (the operator's included) finds the API server.
IN_CLUSTER_CLIENT = """
import json, os, ssl, time, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
context = ssl.create_default_context(cafile=f"{sa}/ca.crt")
request = urllib.request.Request(f"https://{host}:{port}/version",
                                 headers={"Authorization": "Bearer " + open(f"{sa}/token").read()})
result = {"host": host, "port": port}
for attempt in range(10):  # kube-proxy may still be writing its first rules
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            result.update(status=response.status, version=json.load(response).get("gitVersion"))
        break
    except urllib.error.HTTPError as exc:
        result.update(status=exc.code)
        break
    except OSError as exc:
        result.update(error=repr(exc))
        time.sleep(3)
print(json.dumps(result))
"""


def twlegal_dev(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twlegal_dev", *args], capture_output=True, text=True, timeout=timeout)


def cli_state(name: str) -> Path:
    return binaries.cache_dir() / "clusters" / name


def cluster_of(plane: ControlPlane) -> Cluster:
    return Cluster(plane.kubeconfig, api_client(plane.kubeconfig))


def wait_for_service_account(cluster: Cluster) -> None:
    # kube-controller-manager makes `default`; until then no pod can be created in the namespace.
    wait_for(
        "the default service account",
        lambda: cluster.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
        timeout=60,
        interval=0.5,
    )


def pause_pod(name: str) -> dict:
    """A pod of the one image every node has by itself: enough to prove scheduling, the sandbox and
    the pod network."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "containers": [{"name": "pause", "image": node_config.SANDBOX_IMAGE, "imagePullPolicy": "Never"}],
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
        },
    }


def netns_nat_rules(net: node_config.ClusterNetwork) -> str:
    return subprocess.run(
        net.in_netns(["iptables-save", "-t", "nat"]), capture_output=True, text=True, check=True
    ).stdout


def test_two_dev_clusters_with_nodes_run_side_by_side_each_on_its_own_network(local_node_host, tmp_path):
    name_a = f"iso-a-{secrets.token_hex(3)}"
    plane_a = ControlPlane(cli_state(name_a), node=True)
    plane_b = ControlPlane(tmp_path / "b" / "plane", node=True)
    node_b = Node(tmp_path / "b" / "node", plane_b)
    nets: dict[str, node_config.ClusterNetwork] = {}
    started = time.monotonic()
    try:
        up = twlegal_dev("cluster", "up", "--node", "--no-crd", "--name", name_a)
        assert up.returncode == 0, up.stderr[-3000:]
        plane_b.start()
        node_b.start()
        print(f"\ntwo clusters up in {time.monotonic() - started:.0f}s")
        nets.update(a=plane_a.network, b=plane_b.network)
        assert nets["a"] != nets["b"]
        clusters = {"a": cluster_of(plane_a), "b": cluster_of(plane_b)}
        for label, cluster in clusters.items():
            wait_for_service_account(cluster)
            cluster.apply(pause_pod(f"pause-{label}"))
        for label, cluster in clusters.items():
            net = nets[label]
            cluster.kubectl("wait", "--for=condition=Ready", f"pod/pause-{label}", "--timeout=120s")
            pod = cluster.get_json("pod", f"pause-{label}")
            assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(net.pod_cidr), pod["status"]
            assert pod["status"]["hostIP"] == net.node_ip
            service = cluster.get_json("service", "kubernetes")
            assert service["spec"]["clusterIP"] == net.kubernetes_service_ip
            assert ipaddress.ip_address(net.kubernetes_service_ip) in ipaddress.ip_network(net.service_cidr)
            # The API server reaches the kubelet in the node's namespace (kubectl logs/exec/cp).
            logs = cluster.kubectl("logs", f"pause-{label}", check=False)
            assert logs.returncode == 0, logs.stderr
            # Each kube-proxy wrote its rules into its own namespace, for its own Services only.
            other = nets["b" if label == "a" else "a"]
            rules = netns_nat_rules(net)
            assert f"{net.kubernetes_service_ip}/32" in rules
            assert f"{other.kubernetes_service_ip}/32" not in rules
        status = twlegal_dev("cluster", "status", "--name", name_a)
        assert status.returncode == 0 and nets["a"].pod_cidr in status.stdout, status.stdout
    finally:
        down = twlegal_dev("cluster", "down", "--delete", "--name", name_a)
        node_b.stop()
        plane_b.stop()
    assert down.returncode == 0, down.stderr
    for net in nets.values():
        assert network.leftovers(net) == [], f"{net.netns} left behind"
        assert cgroup_leftovers(net.cgroup_root) == []


def operator_image(request) -> str:
    """The operator image (it has python3): the one built already, else built by the e2e tier's
    `images` fixture."""
    ref = steps.image_refs()["operator"]
    if subprocess.run([steps.DOCKER, "image", "inspect", ref], capture_output=True).returncode == 0:
        return ref
    return request.getfixturevalue("images")["operator"]


def in_cluster_client(cluster: Cluster, name: str, image: str) -> dict:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 0,
                "containers": [
                    {
                        "name": "client",
                        "image": image,
                        "imagePullPolicy": "Never",
                        "command": ["python3", "-c", IN_CLUSTER_CLIENT],
                    }
                ],
            },
        }
    )

    def finished():
        phase = cluster.get_json("pod", name).get("status", {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_for(f"pod {name} to finish", finished, timeout=180, interval=1)
    logs = cluster.kubectl("logs", name).stdout.strip().splitlines()
    assert phase == "Succeeded" and logs, (phase, logs)
    return json.loads(logs[-1])


def kubernetes_endpoint_ports(cluster: Cluster) -> tuple[list[int], list[int]]:
    endpoints = cluster.get_json("endpoints", "kubernetes")
    slice_ = cluster.get_json("endpointslice", "kubernetes")
    return (
        [port["port"] for subset in endpoints["subsets"] for port in subset["ports"]],
        [port["port"] for port in slice_["ports"]],
    )


def operator_ready_since(cluster: Cluster, since: dt.datetime) -> dict | None:
    """The operator pod, once a container started after `since` is ready (not the stale status
    etcd kept from before the restart)."""
    pods = cluster.get_json("pods", "-n", steps.OPERATOR_NAMESPACE, "-l", steps.OPERATOR_SELECTOR)["items"]
    for pod in pods:
        for container in pod.get("status", {}).get("containerStatuses") or []:
            started = (container.get("state", {}).get("running") or {}).get("startedAt")
            if (
                container.get("ready")
                and started
                and dt.datetime.fromisoformat(started.replace("Z", "+00:00")) >= since
            ):
                return pod
    return None


def test_a_dev_cluster_works_again_after_down_and_up(local_node_host, request):
    """`make demo`, `twlegal-dev cluster down`, `make demo` again: the operator (and any in-cluster
    client) reaches the API server through the `kubernetes` Service after the restart."""
    image = operator_image(request)
    images = {**steps.image_refs(), "operator": image}  # trainer and server are only named here
    name = f"iso-r-{secrets.token_hex(3)}"
    plane = ControlPlane(cli_state(name), node=True)
    net: node_config.ClusterNetwork | None = None

    def up() -> dt.datetime:
        since = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=1)
        started = time.monotonic()
        result = twlegal_dev("cluster", "up", "--node", "--no-crd", "--name", name)
        assert result.returncode == 0, result.stderr[-3000:]
        print(f"\ncluster {name} up in {time.monotonic() - started:.0f}s")
        return since

    def down() -> None:
        result = twlegal_dev("cluster", "down", "--name", name)
        assert result.returncode == 0, result.stderr

    def operator_works_again(since: dt.datetime) -> None:
        # What `make demo` does on a running cluster: helm upgrade --install --wait (failing fast
        # on a crash loop), then the operator pod of this run must be ready: it reached the API.
        steps.install_chart(e2e, images, timeout=180)
        wait_for(
            "the operator ready again after the restart",
            lambda: operator_ready_since(e2e.cluster, since),
            timeout=180,
            interval=2,
        )

    try:
        up()
        net, first_server = plane.network, plane.server()
        e2e = steps.E2ECluster("local", cluster_of(plane), "twlegal-local", lambda refs: None)
        loaded = twlegal_dev("cluster", "load", image, "--name", name, "--docker", steps.DOCKER)
        assert loaded.returncode == 0, loaded.stderr
        steps.install_chart(e2e, images, timeout=180)
        down()

        # 1. The same ports: the `kubernetes` Endpoints the API server wrote at the first start
        # still name the right one.
        since = up()
        assert plane.server() == first_server
        operator_works_again(since)
        reply = in_cluster_client(e2e.cluster, "client-after-restart", image)
        assert reply.get("status") == 200, reply
        assert reply["host"] == net.kubernetes_service_ip

        # 2. A crash (the API server gets no chance to withdraw its endpoint), then its port taken
        # by another program: the cluster moves to a new port and rewrites the `kubernetes`
        # Endpoints and EndpointSlice, whose port the API server itself never corrects.
        os.kill(json.loads((plane.state_dir / "pids.json").read_text())["kube-apiserver"], signal.SIGKILL)
        down()
        ports = json.loads(plane.ports_file.read_text())
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the last run's TIME_WAITs
            squatter.bind(("0.0.0.0", ports["kube-apiserver"]))
            squatter.listen()
            since = up()
        assert plane.api_port() != ports["kube-apiserver"]
        assert kubernetes_endpoint_ports(e2e.cluster) == ([plane.api_port()], [plane.api_port()])
        operator_works_again(since)
        reply = in_cluster_client(e2e.cluster, "client-after-port-change", image)
        assert reply.get("status") == 200, reply

        # 3. The demo fails fast, with the reason, when the operator cannot become ready: an image
        # the node does not have is reported within seconds, not after helm's 3-minute wait.
        started = time.monotonic()
        with pytest.raises(steps.OperatorNotReady, match="ErrImageNeverPull") as failed:
            steps.install_chart(e2e, {**images, "operator": "docker.io/twlegal/operator:no-such-tag"}, timeout=180)
        assert time.monotonic() - started < 90, "it waited for helm's timeout instead of failing fast"
        assert "no-such-tag" in str(failed.value) or "pod twlegal-operator" in str(failed.value)
    finally:
        final = twlegal_dev("cluster", "down", "--delete", "--name", name)
    assert final.returncode == 0, final.stderr
    assert net is not None and network.leftovers(net) == [] and cgroup_leftovers(net.cgroup_root) == []
