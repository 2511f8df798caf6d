"""Storage on the real control plane: overlapping placements refused before any Job, the default
claim, retention and reclaim through storage Jobs whose pods run the real `twlegal-train storage`
command on the claim's hostPath (tests/support/fake_kubelet.py), and the pinned checksum."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.test_lifecycle import conditions, events, release_doc, status, wait_phase
from tests.support.cluster import Cluster, wait_for
from twlegal.api.release import LegalModelRelease
from twlegal.contracts import manifest
from twlegal.contracts.serving import ServingLaunch
from twlegal.contracts.storage import OWNER_FILE
from twlegal.render import storage as render_storage

MOUNT = "/mnt/twlegal"


def host_root(namespace: str) -> Path:
    return Path(f"/tmp/twlegal-{namespace}")  # the PV behind the namespace's claim (conftest)


def stored(cluster: Cluster, namespace: str, name: str) -> LegalModelRelease:
    return LegalModelRelease.from_object(cluster.get_json("lmr", name, "-n", namespace))


def placement_on_host(cluster: Cluster, namespace: str, name: str) -> tuple[Path, Path]:
    """The release's checkpoint and weights directories on the host, once status records them."""
    st = wait_for(f"{name}'s placement", lambda: status(cluster, namespace, name).get("storage") or {}, 60)
    root = host_root(namespace)
    return root / st["checkpointPath"], root / st["artifactPath"]


def seed_run(cluster: Cluster, namespace: str, name: str, steps=(2, 4)) -> tuple[Path, Path]:
    """What the trainer leaves on the volume: owned checkpoints with completion marks, and weights
    published with an owner's manifest. Returns the two directories."""
    release = stored(cluster, namespace, name)
    owner = render_storage.owner(release)
    checkpoints, weights = placement_on_host(cluster, namespace, name)
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / OWNER_FILE).write_text(owner.to_json())
    for step in steps:
        directory = checkpoints / f"checkpoint-{step}"
        directory.mkdir(exist_ok=True)
        (directory / "model.safetensors").write_bytes(os.urandom(4096))
        (directory / "twlegal-complete.json").write_text(json.dumps({"worldSize": 1, "owner": owner.to_wire()}))
    weights.mkdir(parents=True, exist_ok=True)
    (weights / "model.safetensors").write_bytes(os.urandom(4096))
    manifest.write(weights, release.spec.model, release.spec.version, release=owner.to_wire())
    return checkpoints, weights


def test_a_release_whose_directories_overlap_another_is_refused_before_any_job(
    cluster: Cluster, operator, fake_node, namespace
):
    fake_node.behave("owner-a", training="hold")
    first = release_doc(namespace, "owner-a", "v0.1.0")
    first["spec"]["storage"].update(checkpointPath="ckpt/{name}", artifactPath="weights/{name}")
    cluster.apply(first)
    wait_phase(cluster, namespace, "owner-a", "Pending", "Training")

    second = release_doc(namespace, "owner-b", "v0.2.0")
    second["spec"]["storage"].update(checkpointPath="ckpt/owner-a/retry-{name}", artifactPath="weights/{name}")
    cluster.apply(second)
    st = wait_for(
        "owner-b to be refused",
        lambda: (
            (s := status(cluster, namespace, "owner-b"))
            and conditions(s).get("Trained", {}).get("reason") == "StorageConflict"
            and s
        ),
        60,
    )
    trained = conditions(st)["Trained"]
    assert "release owner-a" in trained["message"] and "ckpt/owner-a" in trained["message"], trained
    assert st["phase"] == "Pending"
    assert cluster.kubectl("get", "job", "owner-b-train", "-n", namespace, check=False).returncode != 0
    assert cluster.kubectl("get", "configmap", "owner-b-train", "-n", namespace, check=False).returncode != 0
    wait_for("a StorageConflict event", lambda: "StorageConflict" in events(cluster, namespace, "owner-b"), 30)

    # Its own directory, and it starts.
    second["spec"]["storage"]["checkpointPath"] = "ckpt/{name}"
    cluster.apply(second)
    wait_for(
        "owner-b's training Job",
        lambda: cluster.kubectl("get", "job", "owner-b-train", "-n", namespace, check=False).returncode == 0,
        60,
    )
    fake_node.change("owner-a", training="succeed")


def test_a_release_that_names_no_claim_uses_the_operators_default(cluster: Cluster, operator, fake_node, namespace):
    fake_node.behave("no-claim", training="hold")
    doc = release_doc(namespace, "no-claim", "v0.1.0")
    del doc["spec"]["storage"]["pvc"]
    cluster.apply(doc)
    wait_phase(cluster, namespace, "no-claim", "Pending", "Training")
    job = cluster.get_json("job", "no-claim-train", "-n", namespace)
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert [v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v] == [
        "twlegal-models"
    ]
    assert status(cluster, namespace, "no-claim")["storage"]["claimName"] == "twlegal-models"
    assert cluster.get_json("lmr", "no-claim", "-n", namespace)["spec"]["storage"].get("pvc") is None, (
        "spec is the user's"
    )


def test_retention_prunes_the_checkpoints_of_a_trained_release(cluster: Cluster, operator, fake_node, namespace):
    fake_node.behave("kept-none", training="hold")
    cluster.apply(release_doc(namespace, "kept-none", "v0.1.0"))
    checkpoints, weights = seed_run(cluster, namespace, "kept-none")
    fake_node.change("kept-none", training="succeed")
    wait_phase(cluster, namespace, "kept-none", "Serving")
    st = wait_for(
        "the checkpoints to be pruned",
        lambda: (s := status(cluster, namespace, "kept-none")).get("storage", {}).get("checkpointsPruned") and s,
        60,
    )
    assert not list(checkpoints.glob("checkpoint-*")), "retention keeps no checkpoint after success"
    assert (weights / manifest.MANIFEST_FILE).is_file(), "the weights are never pruned"
    assert "removed" in st["storage"]["message"]
    assert "CheckpointsPruned" in events(cluster, namespace, "kept-none")


def test_retention_keeps_the_newest_checkpoint_of_a_failed_release(cluster: Cluster, operator, fake_node, namespace):
    fake_node.behave("kept-one", training="hold")
    cluster.apply(release_doc(namespace, "kept-one", "v0.1.0"))
    checkpoints, _ = seed_run(cluster, namespace, "kept-one", steps=(2, 4, 6))
    fake_node.change("kept-one", training="fail")
    wait_phase(cluster, namespace, "kept-one", "Failed")
    wait_for(
        "the checkpoints to be pruned",
        lambda: status(cluster, namespace, "kept-one").get("storage", {}).get("checkpointsPruned"),
        60,
    )
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-6"]


def test_delete_reclaims_a_superseded_release_and_keeps_the_weights_a_target_serves(
    cluster: Cluster, operator, fake_node, namespace
):
    for name, version in (("reclaim-v1", "v0.1.0"), ("reclaim-v2", "v0.2.0")):
        fake_node.behave(name, training="hold")
        doc = release_doc(namespace, name, version)
        doc["spec"]["storage"]["reclaimPolicy"] = "Delete"
        cluster.apply(doc)
    dirs = {name: seed_run(cluster, namespace, name) for name in ("reclaim-v1", "reclaim-v2")}
    assert (
        "twlegal.io/reclaim-storage" in cluster.get_json("lmr", "reclaim-v1", "-n", namespace)["metadata"]["finalizers"]
    )
    fake_node.change("reclaim-v1", training="succeed")
    wait_phase(cluster, namespace, "reclaim-v1", "Serving")
    fake_node.change("reclaim-v2", training="succeed")
    wait_phase(cluster, namespace, "reclaim-v2", "Serving")
    wait_phase(cluster, namespace, "reclaim-v1", "Superseded")

    # The superseded release: everything of it goes, then the release.
    cluster.kubectl("delete", "lmr", "reclaim-v1", "-n", namespace, "--wait=false")
    wait_for(
        "reclaim-v1 to be gone",
        lambda: cluster.kubectl("get", "lmr", "reclaim-v1", "-n", namespace, check=False).returncode != 0,
        90,
    )
    assert not dirs["reclaim-v1"][0].exists() and not dirs["reclaim-v1"][1].exists()
    assert (dirs["reclaim-v2"][1] / manifest.MANIFEST_FILE).is_file(), "another release's weights are untouched"

    # The serving release: its checkpoints go, its weights stay (the target still runs them).
    cluster.kubectl("delete", "lmr", "reclaim-v2", "-n", namespace, "--wait=false")
    wait_for(
        "reclaim-v2 to be gone",
        lambda: cluster.kubectl("get", "lmr", "reclaim-v2", "-n", namespace, check=False).returncode != 0,
        90,
    )
    assert not dirs["reclaim-v2"][0].exists()
    assert (dirs["reclaim-v2"][1] / manifest.MANIFEST_FILE).is_file()


def test_the_server_refuses_another_release_s_weights_of_the_same_version(
    cluster: Cluster, operator, fake_node, namespace, tmp_path
):
    fake_node.behave("pinned", training="hold")
    cluster.apply(release_doc(namespace, "pinned", "v0.1.0"))
    _, weights = seed_run(cluster, namespace, "pinned")
    checksum = manifest.read(weights).checksum
    fake_node.change("pinned", training="succeed", checksum=checksum)
    wait_phase(cluster, namespace, "pinned", "Serving")
    deploy = cluster.get_json("deployment", "tiny-legal", "-n", namespace)
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    launch = ServingLaunch.from_argv(args)
    assert launch.checksum == checksum == status(cluster, namespace, "pinned")["artifact"]["checksum"]

    # The launcher, with the Deployment's own arguments, on the host's copy of the volume.
    on_host = [a.replace(MOUNT, str(host_root(namespace)), 1) if a.startswith(MOUNT) else a for a in args]
    manifest.verify(Path(ServingLaunch.from_argv(on_host).model), "v0.1.0", checksum)  # as published: accepted

    # Another release of the same version published into that directory (same model, same version).
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes(os.urandom(4096))
    manifest.write(
        other, "twlegal/tiny-legal", "v0.1.0", release={"namespace": namespace, "name": "impostor", "inputs": "0"}
    )
    for path in weights.iterdir():
        path.unlink()
    for path in other.iterdir():
        (weights / path.name).write_bytes(path.read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "twlegal_server.launcher", *on_host], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc.stderr
    assert "refusing to start" in proc.stderr and checksum in proc.stderr, proc.stderr
