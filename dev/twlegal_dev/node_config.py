"""The local node's configuration files, as pure functions of a few paths and addresses:
containerd 2.x (config version 3), the CNI bridge network, kubelet and kube-proxy.

Why each non-default setting is there:
- cgroup v1 without systemd (these machines): cgroupfs drivers everywhere, and kubelet's
  `failCgroupV1: false` (1.35 made refusing cgroup v1 the default).
- No registry: the sandbox image is pinned in containerd (so it is never garbage-collected or
  pulled) and kubelet's image GC threshold is 100%, because a collected image cannot come back.
- Eviction thresholds are low: a shared build machine's disk may be 85% full, and kubelet's
  default (evict below 15% free) would evict the very pods the tests watch.
- Several dev clusters run side by side on one host (`make demo`'s cluster stays up while
  `make test` starts its own): each gets a ClusterNetwork of its own, see there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SANDBOX_IMAGE = "registry.twlegal.local/pause:0.1.0"
# Index 0 is what every cluster used before clusters had an index of their own (10.0.0.0/24,
# 10.244.0.0/24): only a state directory from then gets it; new clusters count from 1.
MAX_INDEX = 255
NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class ClusterNetwork:
    """Everything of one dev cluster that must differ from every other cluster on the host, as a
    function of one small number the cluster keeps for its lifetime (network.py hands it out).

    Why a network namespace per node: kube-proxy's iptables chains have fixed names
    (KUBE-SERVICES, KUBE-POSTROUTING, ...), so two kube-proxies in one namespace rewrite each
    other's rules; the pods' bridge, their routes and the FORWARD rules would collide too. The
    node's containerd, kubelet and kube-proxy therefore run inside `netns` (joined with `nsenter
    --net` only: `ip netns exec` also unshares the mount namespace, which would hide kubelet's
    volume mounts from containerd). A veth pair joins it to the host over a /30 transfer link:
    - host_ip (the host's end) is where the node reaches the API server (which listens on all
      addresses) and what the API server advertises in the `kubernetes` Endpoints, so pods reach
      it through the Service IP; it is in the serving certificate;
    - node_ip (the namespace's end) is the node's InternalIP: the API server reaches kubelet
      there (kubectl exec/logs/cp);
    - the host routes pod_cidr and service_cidr to node_ip, so the host reaches pod IPs and
      ClusterIPs as it did when the node shared its namespace.
    Pod and Service ranges differ per cluster because those host routes would clash otherwise
    (and an address seen in one cluster's logs then names one pod). kubelet's cgroupRoot differs
    because two kubelets under one `kubepods` cgroup each take the other's pods for orphans.
    """

    index: int

    def __post_init__(self) -> None:
        if not 0 <= self.index <= MAX_INDEX:
            raise ValueError(f"cluster network index {self.index} is not in 0..{MAX_INDEX}")

    @property
    def pod_cidr(self) -> str:
        return f"10.244.{self.index}.0/24"

    @property
    def service_cidr(self) -> str:
        return f"10.0.{self.index}.0/24"

    @property
    def kubernetes_service_ip(self) -> str:
        return f"10.0.{self.index}.1"

    @property
    def transfer_cidr(self) -> str:
        return f"10.245.{self.index}.0/30"

    @property
    def host_ip(self) -> str:
        return f"10.245.{self.index}.1"

    @property
    def node_ip(self) -> str:
        return f"10.245.{self.index}.2"

    # Interface names: at most 15 bytes.
    @property
    def netns(self) -> str:
        return f"twl-{self.index}"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def host_veth(self) -> str:
        return f"twl{self.index}-host"

    @property
    def node_veth(self) -> str:
        return f"twl{self.index}-node"

    @property
    def bridge(self) -> str:
        return f"twl{self.index}-pods"

    @property
    def cgroup_root(self) -> str:
        return f"/twlegal-{self.index}"

    @property
    def rule_comment(self) -> str:
        return f"twlegal {self.netns}"

    def in_netns(self, argv: list[str]) -> list[str]:
        """`argv` run inside the node's network namespace, in the host's mount namespace."""
        return ["nsenter", f"--net={self.netns_path}", "--", *argv]


def netns_setup(net: ClusterNetwork) -> list[list[str]]:
    """The commands that make the node's namespace, its link to the host and the host's routes."""
    inside = net.in_netns
    return [
        ["ip", "netns", "add", net.netns],
        ["ip", "link", "add", net.host_veth, "type", "veth", "peer", "name", net.node_veth],
        ["ip", "link", "set", net.node_veth, "netns", net.netns],
        ["ip", "addr", "add", f"{net.host_ip}/30", "dev", net.host_veth],
        ["ip", "link", "set", net.host_veth, "up"],
        inside(["ip", "link", "set", "lo", "up"]),
        inside(["ip", "addr", "add", f"{net.node_ip}/30", "dev", net.node_veth]),
        inside(["ip", "link", "set", net.node_veth, "up"]),
        inside(["ip", "route", "add", "default", "via", net.host_ip]),
        # Per namespace: forwarding between the pods' bridge and the link, and bridged pod
        # traffic through iptables (kube-proxy's DNAT for pod-to-Service-to-pod on one bridge).
        # (/proc/sys/net is the writer's namespace's; the bridge file exists once br_netfilter is
        # loaded, and defaults to 1 in a namespace made after that.)
        inside(
            [
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward; f=/proc/sys/net/bridge/bridge-nf-call-iptables;"
                " if [ -e $f ]; then echo 1 > $f; fi",
            ]
        ),
        ["ip", "route", "add", net.pod_cidr, "via", net.node_ip, "dev", net.host_veth],
        ["ip", "route", "add", net.service_cidr, "via", net.node_ip, "dev", net.host_veth],
    ]


def host_rules(net: ClusterNetwork) -> list[list[str]]:
    """The host's iptables rules for the node's traffic beyond the host (pods' DNS, egress), as
    `iptables -t TABLE` arguments without the action. Traffic between the host and the node is
    local to the host and needs none. A Docker engine sets the FORWARD policy to DROP, hence the
    ACCEPTs; the pods' source is already the node's address (the CNI bridge masquerades), which the
    host masquerades in turn. Each carries the cluster's comment, so a test can tell them apart."""
    comment = ["-m", "comment", "--comment", net.rule_comment]
    return [
        ["-t", "filter", "FORWARD", "-i", net.host_veth, "-j", "ACCEPT", *comment],
        ["-t", "filter", "FORWARD", "-o", net.host_veth, "-j", "ACCEPT", *comment],
        ["-t", "nat", "POSTROUTING", "-s", net.transfer_cidr, "!", "-o", net.host_veth, "-j", "MASQUERADE", *comment],
    ]


@dataclass(frozen=True)
class NodePaths:
    """Where one node keeps its state. The socket lives under /run: a unix socket path is limited
    to 108 bytes, and a test's temporary directory may be longer."""

    state_dir: Path
    run_dir: Path

    @property
    def containerd_root(self) -> Path:
        return self.state_dir / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.run_dir / "containerd"

    @property
    def containerd_config(self) -> Path:
        return self.state_dir / "containerd" / "config.toml"

    @property
    def containerd_socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state_dir / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.state_dir / "cni" / "ipam"

    @property
    def kubelet_dir(self) -> Path:
        return self.state_dir / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.state_dir / "kubelet-config.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.state_dir / "kubelet.kubeconfig"

    @property
    def kube_proxy_config(self) -> Path:
        return self.state_dir / "kube-proxy-config.yaml"

    @property
    def kube_proxy_kubeconfig(self) -> Path:
        return self.state_dir / "kube-proxy.kubeconfig"


def _toml_string(value: str | Path) -> str:
    return json.dumps(str(value))  # a TOML basic string is JSON-compatible for these paths


def containerd_config(paths: NodePaths, *, cni_bin_dir: Path, runc: Path) -> str:
    return f"""version = 3
root = {_toml_string(paths.containerd_root)}
state = {_toml_string(paths.containerd_state)}

[grpc]
  address = {_toml_string(paths.containerd_socket)}

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = '{SANDBOX_IMAGE}'

[plugins.'io.containerd.cri.v1.runtime']
  # Network namespaces under the state directory, so stopping the node can find and remove them.
  netns_mounts_under_state_dir = true
  # Kubelet asks for oom_score_adj -998 for sandboxes; lowering it needs CAP_SYS_RESOURCE, which
  # root lacks on some VMs (runc then fails with "can't get final child's PID from pipe").
  # Containers get no less than containerd's own score instead.
  restrict_oom_score_adj = true

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = [{_toml_string(cni_bin_dir)}]
  conf_dir = {_toml_string(paths.cni_conf_dir)}

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = {_toml_string(runc)}
  SystemdCgroup = false

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
"""


def cni_network(paths: NodePaths, net: ClusterNetwork) -> dict:
    """A bridge with host-local addresses and masquerade, plus portmap for hostPorts."""
    return {
        "cniVersion": "1.0.0",
        "name": net.bridge,
        "plugins": [
            {
                "type": "bridge",
                "bridge": net.bridge,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(paths.cni_ipam_dir),
                    "ranges": [[{"subnet": net.pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(paths: NodePaths, net: ClusterNetwork, *, ca_file: Path, port: int, healthz_port: int) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "0.0.0.0",
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        # kubepods (and the QoS cgroups under it) below a root of this cluster's own: another
        # node's kubelet on the host would otherwise see these pods' cgroups as its orphans.
        "cgroupRoot": net.cgroup_root,
        "failCgroupV1": False,
        "failSwapOn": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        # Importing a multi-GB image dips the free space for a moment; do not keep the node
        # tainted for the default five minutes after it recovers.
        "evictionPressureTransitionPeriod": "10s",
        "serializeImagePulls": False,
        "resolvConf": "/etc/resolv.conf",
        "registerNode": True,
        "maxPods": 110,
        "podPidsLimit": -1,
        "shutdownGracePeriod": "0s",
        "rotateCertificates": False,
    }


def kube_proxy_config(
    paths: NodePaths, net: ClusterNetwork, *, hostname: str, healthz_port: int, metrics_port: int
) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(paths.kube_proxy_kubeconfig)},
        "hostnameOverride": hostname,
        "mode": "iptables",
        "clusterCIDR": net.pod_cidr,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # Leave the host's conntrack sysctls alone (a shared machine; the defaults are enough here).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }
