"""The local node's configuration files, as pure functions of a few paths and addresses:
containerd 2.x (config version 3), the CNI bridge network, kubelet and kube-proxy.

Why each non-default setting is there:
- cgroup v1 without systemd (these machines): cgroupfs drivers everywhere, and kubelet's
  `failCgroupV1: false` (1.35 made refusing cgroup v1 the default).
- No registry: the sandbox image is pinned in containerd (so it is never garbage-collected or
  pulled) and kubelet's image GC threshold is 100%, because a collected image cannot come back.
- Eviction thresholds are low: a shared build machine's disk may be 85% full, and kubelet's
  default (evict below 15% free) would evict the very pods the tests watch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SANDBOX_IMAGE = "registry.twlegal.local/pause:0.1.0"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.0.0.0/24"


@dataclass(frozen=True)
class NodePaths:
    """Where one node keeps its state. The socket lives under /run: a unix socket path is limited
    to 108 bytes, and a test's temporary directory may be longer."""

    state_dir: Path
    run_dir: Path

    @property
    def containerd_root(self) -> Path: return self.state_dir / "containerd" / "root"
    @property
    def containerd_state(self) -> Path: return self.run_dir / "containerd"
    @property
    def containerd_config(self) -> Path: return self.state_dir / "containerd" / "config.toml"
    @property
    def containerd_socket(self) -> Path: return self.run_dir / "containerd.sock"
    @property
    def cni_conf_dir(self) -> Path: return self.state_dir / "cni" / "net.d"
    @property
    def cni_ipam_dir(self) -> Path: return self.state_dir / "cni" / "ipam"
    @property
    def kubelet_dir(self) -> Path: return self.state_dir / "kubelet"
    @property
    def kubelet_config(self) -> Path: return self.state_dir / "kubelet-config.yaml"
    @property
    def kubelet_kubeconfig(self) -> Path: return self.state_dir / "kubelet.kubeconfig"
    @property
    def kube_proxy_config(self) -> Path: return self.state_dir / "kube-proxy-config.yaml"
    @property
    def kube_proxy_kubeconfig(self) -> Path: return self.state_dir / "kube-proxy.kubeconfig"


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


def cni_network(paths: NodePaths, *, bridge: str) -> dict:
    """A bridge with host-local addresses and masquerade, plus portmap for hostPorts."""
    return {
        "cniVersion": "1.0.0",
        "name": bridge,
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(paths.cni_ipam_dir),
                      "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(paths: NodePaths, *, ca_file: Path, port: int, healthz_port: int) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "0.0.0.0",
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(ca_file)}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
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


def kube_proxy_config(paths: NodePaths, *, hostname: str, healthz_port: int, metrics_port: int) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(paths.kube_proxy_kubeconfig)},
        "hostnameOverride": hostname,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # Leave the host's conntrack sysctls alone (a shared machine; the defaults are enough here).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }
