"""The local node's configuration files and its sandbox image archive (pure; the e2e tier runs them)."""

from __future__ import annotations

import hashlib
import json
import tarfile
import tomllib
from pathlib import Path

from twlegal_dev import node_config, oci


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
    config = node_config.kubelet_config(paths(tmp_path), ca_file=Path("/ca.crt"), port=1, healthz_port=2)
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["imageGCHighThresholdPercent"] == 100
    assert all(value in ("1%", "100Mi") for value in config["evictionHard"].values())
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"


def test_cni_network_is_a_bridge_with_its_own_address_range(tmp_path):
    network = node_config.cni_network(paths(tmp_path), bridge="twl1")
    bridge = network["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["bridge"] == "twl1" and bridge["ipMasq"] is True
    assert bridge["ipam"]["ranges"] == [[{"subnet": node_config.POD_CIDR}]]


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
