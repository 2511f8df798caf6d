"""The mission's own test: a tiny release from `kubectl apply` to chat answers, in real pods.

The tests run in order and build on each other (one cluster, one target): the first release is
trained (its pod deleted once mid-run), evaluated and served; the second rolls the Deployment
over under load, its key is rotated and its own spec edited (both roll its pods in place); a third
serves and is deleted, handing the target back; the first is deleted; a last one scores below its
threshold and is rejected; then the chart is uninstalled. Each asserts what a user would see.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import subprocess
import sys
import time

import pytest

from tests.cases import TINY_RELEASE, load_example
from tests.support.cluster import wait_for
from twlegal.api.release import LegalModelRelease
from twlegal.render import names
from twlegal_dev import scenario as steps

FIRST = load_example()
TARGET = FIRST["spec"]["serving"]["target"]
MODEL = FIRST["spec"]["serving"].get("servedModelName") or FIRST["spec"]["model"]  # what clients ask for
TRAIN_TIMEOUT = 900.0


def release_variant(version: str, **changes) -> dict:
    obj = copy.deepcopy(FIRST)
    obj["metadata"]["name"] = f"tiny-legal-{version.replace('.', '-')}"
    obj["spec"]["version"] = version
    obj["spec"]["training"]["hyperparameters"].update(changes.pop("hyperparameters", {}))
    obj["spec"]["evaluation"].update(changes.pop("evaluation", {}))
    assert not changes
    return obj


SECOND = release_variant("v0.2.0", hyperparameters={"seed": 7, "learningRate": 4e-3})
THIRD = release_variant("v0.2.1", hyperparameters={"seed": 11})
REJECTED = release_variant("v0.3.0", evaluation={"minScore": 100})


def status(e2e: steps.E2ECluster, name: str) -> dict:
    return e2e.cluster.get_json("legalmodelrelease", "-n", steps.NAMESPACE, name).get("status") or {}


def wait_phase(e2e: steps.E2ECluster, name: str, phases: set[str], timeout: float = TRAIN_TIMEOUT) -> dict:
    """Poll until the release is in one of `phases`; fail at once on an unexpected final phase."""
    deadline = time.monotonic() + timeout
    current: dict = {}
    while time.monotonic() < deadline:
        current = status(e2e, name)
        if current.get("phase") in phases:
            return current
        if current.get("phase") in {"Failed", "Rejected", "RolledBack"}:
            raise AssertionError(f"{name} is {current['phase']}: {current.get('conditions')}")
        time.sleep(2)
    raise AssertionError(f"{name} never reached {phases} in {timeout}s: {current}")


def deployment_revision(e2e: steps.E2ECluster) -> str:
    deployment = e2e.cluster.get_json("deployment", "-n", steps.NAMESPACE, TARGET)
    return deployment["spec"]["template"]["metadata"]["annotations"]["twlegal.io/revision"]


def placement(e2e: steps.E2ECluster, name: str) -> dict:
    """The release's directories (relative to the volume), once its training Job exists."""
    return wait_for(f"{name}'s placement", lambda: status(e2e, name).get("storage"), timeout=120, interval=1)


def on_volume(e2e: steps.E2ECluster, path: str) -> bool:
    return steps.in_loader(e2e, "test", "-e", f"{steps.MOUNT}/{path}", check=False).returncode == 0


def release_events(e2e: steps.E2ECluster, name: str) -> list[str]:
    items = e2e.cluster.get_json("events", "-n", steps.NAMESPACE, "--field-selector", f"involvedObject.name={name}")
    return [e["reason"] for e in items["items"]]


def test_a_tiny_release_trains_resumes_after_its_pod_is_deleted_and_serves(e2e):
    release = LegalModelRelease.from_object(FIRST)
    started = time.monotonic()
    e2e.cluster.kubectl("apply", "-f", str(TINY_RELEASE))
    # `kubectl apply -f release.yaml && twlegal watch RELEASE`, as a CI pipeline runs it (no terminal).
    watch = subprocess.Popen(
        [sys.executable, "-m", "twlegal.cli", "watch", release.name, "-n", steps.NAMESPACE, "--interval", "1"],
        env={**os.environ, "KUBECONFIG": str(e2e.cluster.kubeconfig)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    where = placement(e2e, release.name)
    checkpoints = f"{steps.MOUNT}/{where['checkpointPath']}"
    # The operator reads the trainer's progress from its pod while it trains (issue 18).
    live = wait_for(
        "live progress from the training pod",
        lambda: (p := status(e2e, release.name).get("progress") or {}).get("step") and p.get("total") and p,
        timeout=TRAIN_TIMEOUT,
        interval=1,
    )
    assert live["stage"] == "training" and 0 < live["percent"] < 100 and live["loss"] > 0, live

    def first_checkpoint():
        listing = steps.in_loader(e2e, "sh", "-c", f"ls {checkpoints}/*/twlegal-complete.json", check=False)
        return listing.returncode == 0 and listing.stdout.strip()

    wait_for("a complete checkpoint", first_checkpoint, timeout=TRAIN_TIMEOUT, interval=1)
    job = names.training_job_name(release)
    e2e.cluster.kubectl("delete", "pod", "-n", steps.NAMESPACE, "-l", f"job-name={job}", "--wait=false")

    current = wait_phase(e2e, release.name, {"Serving"})
    e2e.timings["first_release_to_serving_seconds"] = round(time.monotonic() - started, 1)
    out, err = watch.communicate(timeout=120)
    assert watch.returncode == 0, out[-2000:] + err[-2000:]
    assert any(line.startswith("Training: ") and "%" in line for line in out.splitlines()), out[-2000:]
    assert out.splitlines()[-1].startswith(f"{release.name}: Serving"), out[-500:]
    reasons = release_events(e2e, release.name)
    assert reasons.count("CheckpointSaved") == 1 and "Resumed" in reasons, reasons
    assert "progress" not in current, "no progress once the stages ended"
    result = steps.read_volume_json(e2e, f"{where['artifactPath']}/twlegal-result.json")
    assert result, "the trainer wrote no result beside the weights"
    assert result["outcome"] == "Succeeded"
    assert current["training"]["lossPlot"] == "training_loss.png"
    assert on_volume(e2e, f"{where['artifactPath']}/training_loss.png"), "the loss curve beside the weights"
    assert on_volume(e2e, f"{where['checkpointPath']}/runs"), "TensorBoard event files beside the checkpoints"
    assert result["resumedFromStep"] and result["resumedFromStep"] > 0, "the retry started from scratch"
    assert result["globalStep"] == result["totalSteps"] == current["training"]["globalStep"]
    assert current["training"]["attempts"] >= 2
    assert current["evaluation"]["passed"] is True
    assert deployment_revision(e2e) == "v0.1.0"
    # Retention: once trained, no checkpoint is kept (the weights are published).
    wait_for("retention", lambda: status(e2e, release.name).get("storage", {}).get("checkpointsPruned"), timeout=120)
    listing = steps.in_loader(e2e, "sh", "-c", f"ls -d {checkpoints}/checkpoint-* 2>/dev/null", check=False)
    assert not listing.stdout.strip(), listing.stdout

    base_url = steps.service_url(e2e, current["serving"]["service"])
    # Closed by default: the tiny release names no key, so the operator generated one for the target.
    assert current["serving"]["apiKeySecret"] == f"{TARGET}-api-key/api-key"
    steps.use_api_key(e2e, None)
    refused = steps.in_loader(e2e, "python3", "-c", steps.CHAT_CLIENT, "once", base_url, MODEL, "民法？", check=False)
    assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr[-500:]
    steps.use_api_key(e2e, steps.api_key(e2e, current))
    reply = steps.chat(e2e, base_url, MODEL, "民法第6條的內容是什麼？")
    assert reply["answer"].strip(), reply
    assert reply["revisions"] == ["v0.1.0"], reply
    print(f"\n{TARGET} v0.1.0 answered: {reply['answer']!r}")


def revision_runs(records: list[dict]) -> str:
    """The answers' revisions in order, compressed: `v0.1.0 x120, v0.2.0 x30`."""
    runs: list[list] = []
    for record in records:
        label = ",".join(record["revisions"]) if record["ok"] else "FAILED"
        if runs and runs[-1][0] == label:
            runs[-1][1] += 1
        else:
            runs.append([label, 1])
    return ", ".join(f"{label} x{count}" for label, count in runs)


def serving_pods(e2e: steps.E2ECluster, release_name: str) -> list[dict]:
    return e2e.cluster.get_json(
        "pods", "-n", steps.NAMESPACE, "-l", f"{names.RELEASE_LABEL}={release_name},{names.COMPONENT_LABEL}=serving"
    )["items"]


def test_a_second_release_rolls_over_with_zero_failed_requests(e2e):
    first = status(e2e, FIRST["metadata"]["name"])
    base_url = steps.service_url(e2e, first["serving"]["service"])
    started = time.monotonic()
    with steps.ClientLoop(e2e, base_url, MODEL) as loop:
        e2e.cluster.apply(SECOND)
        wait_phase(e2e, SECOND["metadata"]["name"], {"Serving"})
        # Keep asking until the old pod has drained and is gone, then a little longer.
        wait_for(
            "the old serving pod to be gone",
            lambda: not serving_pods(e2e, FIRST["metadata"]["name"]),
            timeout=180,
            interval=1,
        )
        time.sleep(5)
        records = loop.stop()
    e2e.timings["second_release_to_serving_seconds"] = round(time.monotonic() - started, 1)
    e2e.timings["rollover_requests"] = len(records)
    timeline = revision_runs(records)
    print(f"\nrollover, {len(records)} requests: {timeline}")
    failed = [r for r in records if not r["ok"]]
    assert not failed, f"{len(failed)} of {len(records)} requests failed during the rollover: {failed[:3]}; {timeline}"
    assert len(records) >= 20, "too few requests to say anything about the rollover"
    seen = [r["revisions"] for r in records]
    assert seen[0] == ["v0.1.0"], timeline
    assert seen[-3:] == [["v0.2.0"]] * 3, f"the answers did not switch to the new revision: {timeline}"
    assert status(e2e, FIRST["metadata"]["name"])["phase"] == "Superseded"
    assert deployment_revision(e2e) == "v0.2.0"


def test_a_rotated_key_rolls_the_serving_pods_with_zero_failed_requests(e2e):
    """The README's rotation: the new key in place, the old one as `previous-api-key`; the pods
    roll and accept both; the clients move to the new key; nothing fails on the way."""
    second = status(e2e, SECOND["metadata"]["name"])
    base_url = steps.service_url(e2e, second["serving"]["service"])
    old_key = steps.api_key(e2e, second)
    new_key = secrets.token_urlsafe(48)
    secret = second["serving"]["apiKeySecret"].split("/", 1)[0]
    old_pods = {p["metadata"]["name"] for p in serving_pods(e2e, SECOND["metadata"]["name"])}
    with steps.ClientLoop(e2e, base_url, MODEL) as loop:  # asking with the old key throughout the roll
        time.sleep(3)
        patch = {"stringData": {"api-key": new_key, "previous-api-key": old_key}}
        e2e.cluster.kubectl("patch", "secret", secret, "-n", steps.NAMESPACE, "--type=merge", "-p", json.dumps(patch))
        wait_for(
            "the serving pods to roll onto the rotated key",
            lambda: (
                (pods := serving_pods(e2e, SECOND["metadata"]["name"]))
                and not old_pods & {p["metadata"]["name"] for p in pods}
                and all(c.get("ready") for p in pods for c in p["status"].get("containerStatuses", []))
            ),
            timeout=600,
            interval=2,
        )
        steps.use_api_key(e2e, new_key)  # the clients move to the new key
        time.sleep(8)
        records = loop.stop()
    failed = [r for r in records if not r["ok"]]
    print(f"\nkey rotation, {len(records)} requests, {len(failed)} failed")
    assert not failed, f"{len(failed)} of {len(records)} requests failed during the rotation: {failed[:3]}"
    assert len(records) >= 20
    wait_phase(e2e, SECOND["metadata"]["name"], {"Serving"})
    steps.use_api_key(e2e, old_key)  # the old key still works while it is the previous one
    assert steps.chat(e2e, base_url, MODEL, "民法？")["answer"] is not None
    steps.use_api_key(e2e, new_key)
    # The key's value is in no log of the serving pods, and in no object but its Secret.
    for pod in serving_pods(e2e, SECOND["metadata"]["name"]):
        logs = e2e.cluster.kubectl("logs", "-n", steps.NAMESPACE, pod["metadata"]["name"], check=False).stdout
        assert new_key not in logs and old_key not in logs
    objects = e2e.cluster.kubectl(
        "get", "lmr,deployments,pods,events,configmaps", "-n", steps.NAMESPACE, "-o", "yaml"
    ).stdout
    operator_log = e2e.cluster.kubectl(
        "logs", "-n", steps.OPERATOR_NAMESPACE, "deployment/twlegal-operator", check=False
    ).stdout
    assert new_key not in objects and old_key not in objects and new_key not in operator_log


def phases_while(e2e: steps.E2ECluster, name: str, seen: set[str], until) -> None:
    """Record the release's phases until `until()` holds (polled each second)."""
    deadline = time.monotonic() + 600
    while not until() and time.monotonic() < deadline:
        seen.add(status(e2e, name).get("phase"))
        time.sleep(1)
    assert until(), f"timed out; phases seen: {seen}"


def test_a_serving_releases_own_update_rolls_in_place_with_zero_failed_requests(e2e):
    """An edit of the serving release's extraArgs: its pods roll, it stays Serving throughout."""
    name = SECOND["metadata"]["name"]
    second = status(e2e, name)
    base_url = steps.service_url(e2e, second["serving"]["service"])
    old_pods = {p["metadata"]["name"] for p in serving_pods(e2e, name)}
    seen: set[str] = set()
    with steps.ClientLoop(e2e, base_url, MODEL) as loop:
        time.sleep(3)
        patch = {"spec": {"serving": {"extraArgs": ["--max-num-seqs", "8"]}}}
        e2e.cluster.kubectl("patch", "lmr", name, "-n", steps.NAMESPACE, "--type=merge", "-p", json.dumps(patch))

        def rolled() -> bool:
            pods = serving_pods(e2e, name)
            st = status(e2e, name)
            deployed = next((c for c in st.get("conditions", []) if c["type"] == "Deployed"), {})
            return bool(
                pods
                and not old_pods & {p["metadata"]["name"] for p in pods}
                and all(c.get("ready") for p in pods for c in p["status"].get("containerStatuses", []))
                and deployed.get("reason") == "RolloutComplete"
            )

        phases_while(e2e, name, seen, rolled)
        time.sleep(5)
        records = loop.stop()
    failed = [r for r in records if not r["ok"]]
    print(f"\nupdate of the serving release, {len(records)} requests, {len(failed)} failed; phases {seen}")
    assert not failed, f"{len(failed)} of {len(records)} requests failed during the update: {failed[:3]}"
    assert len(records) >= 20
    assert seen == {"Serving"}, "an update of the serving release never leaves Serving"
    args = e2e.cluster.get_json("deployment", TARGET, "-n", steps.NAMESPACE)["spec"]["template"]["spec"]
    assert "--max-num-seqs" in args["containers"][0]["args"]


def test_deleting_the_serving_release_hands_the_target_back_with_zero_failed_requests(e2e):
    """A newer release serves; deleting it re-pins the target to the newest remaining one."""
    e2e.cluster.apply(THIRD)
    wait_phase(e2e, THIRD["metadata"]["name"], {"Serving"})
    assert deployment_revision(e2e) == "v0.2.1"
    base_url = steps.service_url(e2e, status(e2e, THIRD["metadata"]["name"])["serving"]["service"])
    with steps.ClientLoop(e2e, base_url, MODEL) as loop:
        time.sleep(3)
        e2e.cluster.kubectl("delete", "lmr", THIRD["metadata"]["name"], "-n", steps.NAMESPACE, "--wait=false")
        wait_phase(e2e, SECOND["metadata"]["name"], {"Serving"}, timeout=300)
        wait_for(
            "the deleted release's pods to be gone",
            lambda: not serving_pods(e2e, THIRD["metadata"]["name"]),
            timeout=300,
            interval=1,
        )
        time.sleep(5)
        records = loop.stop()
    failed = [r for r in records if not r["ok"]]
    timeline = revision_runs(records)
    print(f"\ndeleting the serving release, {len(records)} requests: {timeline}")
    assert not failed, f"{len(failed)} of {len(records)} requests failed while the target was re-pinned: {timeline}"
    assert len(records) >= 20
    assert [r["revisions"] for r in records][-3:] == [["v0.2.0"]] * 3, timeline
    assert deployment_revision(e2e) == "v0.2.0"


def test_deleting_the_superseded_release_frees_its_directories_with_zero_failed_requests(e2e):
    """reclaimPolicy Delete (the tiny release sets it): deleting the release that served before
    removes its checkpoints and weights, while the target keeps answering from the newer one."""
    name = FIRST["metadata"]["name"]
    where = status(e2e, name)["storage"]
    assert on_volume(e2e, where["artifactPath"]), "the first release's weights are on the volume"
    second = status(e2e, SECOND["metadata"]["name"])
    base_url = steps.service_url(e2e, second["serving"]["service"])
    with steps.ClientLoop(e2e, base_url, MODEL) as loop:
        time.sleep(3)
        e2e.cluster.kubectl("delete", "lmr", name, "-n", steps.NAMESPACE, "--wait=false")
        wait_for(
            f"{name} to be gone",
            lambda: e2e.cluster.kubectl("get", "lmr", name, "-n", steps.NAMESPACE, check=False).returncode != 0,
            timeout=180,
            interval=1,
        )
        time.sleep(3)
        records = loop.stop()
    failed = [r for r in records if not r["ok"]]
    print(f"\ndeleting {name}: {len(records)} requests, {len(failed)} failed")
    assert not failed, f"{len(failed)} of {len(records)} requests failed while {name} was deleted: {failed[:3]}"
    assert len(records) >= 10
    assert not on_volume(e2e, where["artifactPath"]) and not on_volume(e2e, where["checkpointPath"])
    assert on_volume(e2e, status(e2e, SECOND["metadata"]["name"])["storage"]["artifactPath"])
    assert deployment_revision(e2e) == "v0.2.0"


def test_a_release_below_its_threshold_is_rejected_and_serving_stays(e2e):
    e2e.cluster.apply(REJECTED)
    current = wait_phase(e2e, REJECTED["metadata"]["name"], {"Rejected"})
    assert current["evaluation"]["passed"] is False
    assert current["evaluation"]["score"] < 100
    assert deployment_revision(e2e) == "v0.2.0"
    second = status(e2e, SECOND["metadata"]["name"])
    assert second["phase"] == "Serving"
    reply = steps.chat(e2e, steps.service_url(e2e, second["serving"]["service"]), MODEL, "什麼是不當得利？")
    assert reply["revisions"] == ["v0.2.0"]


def test_helm_uninstall_keeps_the_releases_their_crd_and_their_data(e2e):
    steps.uninstall_chart(e2e)
    e2e.cluster.kubectl("get", "crd", "legalmodelreleases.twlegal.io")
    releases = e2e.cluster.get_json("legalmodelreleases", "-n", steps.NAMESPACE)["items"]
    assert {r["metadata"]["name"] for r in releases} >= {
        SECOND["metadata"]["name"],
        REJECTED["metadata"]["name"],
    }
    e2e.cluster.kubectl("get", "pvc", "-n", steps.NAMESPACE, steps.CLAIM)
    weights = steps.in_loader(
        e2e, "ls", f"{steps.MOUNT}/{status(e2e, SECOND['metadata']['name'])['storage']['artifactPath']}"
    )
    assert "twlegal-manifest.json" in weights.stdout
    # The operator is gone: no pod of the chart is left.
    pods = e2e.cluster.get_json("pods", "-n", steps.OPERATOR_NAMESPACE)["items"]
    assert not [p for p in pods if p["metadata"].get("deletionTimestamp") is None], pods


pytestmark = pytest.mark.e2e
