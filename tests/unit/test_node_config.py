"""The local node's configuration files, its network plumbing, the choice of each dev cluster's
network and its sandbox image archive (pure, or files under tmp_path; the e2e tier runs them)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import tarfile
import tomllib
from pathlib import Path

import pytest

from twlegal_dev import network, node_config, oci
from twlegal_dev.node_config import ClusterNetwork

NET = ClusterNetwork(7)


def paths(tmp_path: Path) -> node_config.NodePaths:
    return node_config.NodePaths(tmp_path / "state", Path("/run/twlegal/abc"))


def test_containerd_config_pins_the_sandbox_and_never_lowers_oom_scores(tmp_path):
    p = paths(tmp_path)
    config = tomllib.loads(node_config.containerd_config(p, cni_bin_dir=Path("/cni"), runc=Path("/usr/sbin/runc")))
    assert config["version"] == 3
    assert config["grpc"]["address"] == str(p.containerd_socket)
    plugins = config["plugins"]
    assert plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == node_config.SANDBOX_IMAGE
    runtime = plugins["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["cni"] == {"bin_dirs": ["/cni"], "conf_dir": str(p.cni_conf_dir)}
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["options"] == {"BinaryName": "/usr/sbin/runc", "SystemdCgroup": False}
    assert len(str(p.containerd_socket)) < 108, "unix socket paths are limited to 108 bytes"


def test_kubelet_runs_on_cgroup_v1_without_collecting_images_or_evicting_on_a_full_disk(tmp_path):
    config = node_config.kubelet_config(paths(tmp_path), NET, ca_file=Path("/ca.crt"), port=1, healthz_port=2)
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == "/twlegal-7", "kubepods of its own, not the host's shared one"
    assert config["imageGCHighThresholdPercent"] == 100
    assert all(value in ("1%", "100Mi") for value in config["evictionHard"].values())
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"


def test_cni_network_is_a_bridge_with_its_clusters_address_range(tmp_path):
    conflist = node_config.cni_network(paths(tmp_path), NET)
    bridge = conflist["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["bridge"] == NET.bridge and bridge["ipMasq"] is True
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.7.0/24"}]]


def test_kube_proxy_takes_the_clusters_pod_range(tmp_path):
    config = node_config.kube_proxy_config(paths(tmp_path), NET, hostname="n", healthz_port=1, metrics_port=2)
    assert config["mode"] == "iptables" and config["clusterCIDR"] == NET.pod_cidr


def test_every_cluster_network_has_ranges_and_names_no_other_has():
    nets = [ClusterNetwork(i) for i in range(node_config.MAX_INDEX + 1)]
    ranges = [ipaddress.ip_network(cidr) for n in nets for cidr in (n.pod_cidr, n.service_cidr, n.transfer_cidr)]
    assert not [(a, b) for i, a in enumerate(ranges) for b in ranges[i + 1 :] if a.overlaps(b)]
    for attribute in ("netns", "host_veth", "node_veth", "bridge", "cgroup_root", "rule_comment"):
        assert len({getattr(n, attribute) for n in nets}) == len(nets), attribute
    for n in nets:
        assert all(len(name) <= 15 for name in (n.host_veth, n.node_veth, n.bridge)), "IFNAMSIZ"
        assert ipaddress.ip_address(n.kubernetes_service_ip) in ipaddress.ip_network(n.service_cidr)
        assert {ipaddress.ip_address(n.host_ip), ipaddress.ip_address(n.node_ip)} == set(
            ipaddress.ip_network(n.transfer_cidr).hosts()
        )
    # Index 0 is the one range every cluster had before: a state directory from then keeps its etcd.
    assert (nets[0].service_cidr, nets[0].pod_cidr) == ("10.0.0.0/24", "10.244.0.0/24")
    with pytest.raises(ValueError):
        ClusterNetwork(node_config.MAX_INDEX + 1)


def test_the_node_joins_its_namespace_with_nsenter_keeping_the_hosts_mounts():
    # `ip netns exec` would also unshare the mount namespace: containerd would not see the volumes
    # kubelet mounts for pods.
    assert NET.in_netns(["kubelet", "--v", "1"]) == ["nsenter", "--net=/run/netns/twl-7", "--", "kubelet", "--v", "1"]
    commands = node_config.netns_setup(NET)
    assert commands[0] == ["ip", "netns", "add", "twl-7"]
    assert not [c for c in commands if c[:3] == ["ip", "netns", "exec"]]
    inside = [c[3:] for c in commands if c[0] == "nsenter"]
    assert ["ip", "route", "add", "default", "via", NET.host_ip] in inside
    assert any("ip_forward" in " ".join(c) for c in inside), "forwarding is per namespace"
    # The host reaches pod IPs and ClusterIPs through the node's end of the link.
    for cidr in (NET.pod_cidr, NET.service_cidr):
        assert ["ip", "route", "add", cidr, "via", NET.node_ip, "dev", NET.host_veth] in commands


def test_the_hosts_rules_for_the_node_carry_its_clusters_comment():
    rules = node_config.host_rules(NET)
    assert {" ".join(r[:3]) for r in rules} == {"-t filter FORWARD", "-t nat POSTROUTING"}
    assert all(r[-1] == "twlegal twl-7" for r in rules)


def test_a_cluster_keeps_its_network_and_two_clusters_never_share_one(tmp_path):
    registry = tmp_path / "registry"
    a, b = tmp_path / "a", tmp_path / "b"
    first = network.allocate(a, registry)
    assert network.allocate(a, registry) == first == network.load(a)
    second = network.allocate(b, registry)
    assert second != first and 0 not in (first.index, second.index)


def test_a_deleted_clusters_network_is_free_again_and_a_wiped_one_gets_its_own_back(tmp_path):
    registry = tmp_path / "registry"
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    net_a, net_b = network.allocate(a, registry), network.allocate(b, registry)
    (b / network.NETWORK_FILE).unlink()  # the e2e tier wipes its control plane's state each run
    assert network.allocate(b, registry) == net_b
    for child in a.iterdir():  # `twlegal-dev cluster down --delete`
        child.unlink()
    a.rmdir()
    assert network.allocate(c, registry) == net_a


def test_a_cluster_from_before_networks_keeps_the_old_ranges(tmp_path):
    old = tmp_path / "old"
    (old / "etcd").mkdir(parents=True)
    assert network.allocate(old, tmp_path / "registry").index == 0
    assert json.loads((old / network.NETWORK_FILE).read_text()) == {"index": 0}


def test_the_sandbox_image_archive_is_a_consistent_oci_layout(tmp_path):
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF fake")
    archive = oci.single_binary_image(binary, node_config.SANDBOX_IMAGE, tmp_path / "pause.tar")
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(files["index.json"])
    entry = index["manifests"][0]
    assert entry["annotations"]["io.containerd.image.name"] == node_config.SANDBOX_IMAGE
    manifest = json.loads(files[f"blobs/sha256/{entry['digest'].split(':')[1]}"])
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    layer = files[f"blobs/sha256/{manifest['layers'][0]['digest'].split(':')[1]}"]
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(layer).hexdigest()}"]
    assert config["config"]["Entrypoint"] == ["/pause"]
