"""The end-to-end scenario's building blocks, shared by tests/e2e and `make demo`.

One switch, TWLEGAL_E2E_CLUSTER, picks where pods really run:
- `local` (default): the control plane built from upstream sources plus a real node (containerd,
  kubelet, kube-proxy) on this host; images go in with `docker save | ctr images import`.
- `kind`: an existing kind cluster (TWLEGAL_E2E_KUBECONFIG, TWLEGAL_E2E_KIND_NAME); images go in
  with `kind load docker-image`; storage comes from kind's `standard` StorageClass.
Everything after that (chart, volume, releases, requests) is the same code for both.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import ROOT, binaries
from .client import Cluster, api_client
from .tiny_model import build_tiny_model, make_volume

NAMESPACE = "default"
OPERATOR_NAMESPACE = "twlegal-system"
HELM_RELEASE = "twlegal"
CLAIM = "twlegal-models"
LOADER = "twlegal-loader"
MOUNT = "/mnt/twlegal"
STORAGE_EXAMPLE = ROOT / "examples" / "storage-local.yaml"
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker")
CHAT_CLIENT = (Path(__file__).with_name("chat_client.py")).read_text()
LOADER_KEY_FILE = "/tmp/api-key"  # where chat_client.py reads the key, before every request


def image_refs() -> dict[str, str]:
    """What hack/build-images.sh tags, as containerd names it."""
    version = importlib.metadata.version("twlegal")
    return {name: f"docker.io/twlegal/{name}:cpu-{version}" for name in ("operator", "trainer", "server")}


def build_images() -> dict[str, str]:
    """The CPU images from their Dockerfiles (cached by Docker between runs)."""
    subprocess.run(
        ["bash", str(ROOT / "hack" / "build-images.sh"), "operator", "trainer", "server"],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "DOCKER": DOCKER},
    )
    return image_refs()


@dataclass
class E2ECluster:
    kind: str
    cluster: Cluster
    storage_class: str
    load_images: Callable[[list[str]], None]
    stop: Callable[[], None] = lambda: None
    host_volume: Path | None = None  # local: the hostPath behind the model volume
    timings: dict[str, float] = field(default_factory=dict)


def start_local(state_dir: Path) -> E2ECluster:
    """A cluster of the e2e tier's own; it runs beside any other dev cluster (`make demo`'s), each
    node in a network namespace with ranges and cgroups of its own."""
    from .controlplane import ControlPlane
    from .node import Node

    for name in (*binaries.CONTROL_PLANE, *binaries.NODE):
        binaries.find(name)
    binaries.cni_dir()
    # A fresh control plane and volume each run; the node keeps containerd's images between runs.
    for stale in ("plane", "volumes"):
        shutil.rmtree(state_dir / stale, ignore_errors=True)
    plane = ControlPlane(state_dir / "plane", node=True)
    node = Node(state_dir / "node", plane)
    started = time.monotonic()
    plane.start()
    try:
        node.start()
    except Exception:
        node.stop()
        plane.stop()
        raise

    def stop() -> None:
        node.stop()
        plane.stop()

    cluster = Cluster(plane.kubeconfig, api_client(plane.kubeconfig))
    return E2ECluster(
        "local",
        cluster,
        "twlegal-local",
        lambda refs: node.load_docker_images(refs, docker=DOCKER),
        stop,
        state_dir / "volumes" / CLAIM,
        {"cluster_start_seconds": round(time.monotonic() - started, 1)},
    )


def attach_local(state_dir: Path) -> E2ECluster:
    """A running `twlegal-dev cluster up --node` (state in `state_dir`): used by `make demo`."""
    from .controlplane import ControlPlane
    from .node import Node

    plane = ControlPlane(state_dir, node=True)
    node = Node(state_dir / "node", plane)
    cluster = Cluster(plane.kubeconfig, api_client(plane.kubeconfig))
    return E2ECluster(
        "local",
        cluster,
        "twlegal-local",
        lambda refs: node.load_docker_images(refs, docker=DOCKER),
        host_volume=state_dir / "volumes" / CLAIM,
    )


def load_release(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def use_kind() -> E2ECluster:
    kubeconfig = Path(os.environ["TWLEGAL_E2E_KUBECONFIG"])
    name = os.environ.get("TWLEGAL_E2E_KIND_NAME", "kind")

    def load(refs: list[str]) -> None:
        for ref in refs:
            subprocess.run(["kind", "load", "docker-image", "--name", name, ref], check=True)

    return E2ECluster("kind", Cluster(kubeconfig, api_client(kubeconfig)), "standard", load)


def start_cluster(state_dir: Path) -> E2ECluster:
    kind = os.environ.get("TWLEGAL_E2E_CLUSTER", "local")
    if kind == "local":
        return start_local(state_dir)
    if kind == "kind":
        return use_kind()
    raise ValueError(f"TWLEGAL_E2E_CLUSTER={kind!r}: expected local or kind")


OPERATOR_SELECTOR = (
    f"app.kubernetes.io/name=twlegal,app.kubernetes.io/instance={HELM_RELEASE},app.kubernetes.io/component=operator"
)
# Waiting reasons no wait mends: the pod needs a fix (an image, a config, the code), not time.
STUCK_REASONS = {
    "CrashLoopBackOff",
    "ErrImageNeverPull",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}
CHART_TIMEOUT = 300.0
SETTLE_SECONDS = 20.0
CRASHES = 3  # restarts with a failed last run that make a crash loop, whatever the state reads now


class OperatorNotReady(RuntimeError):
    """The operator pod did not become ready; the message says why (state, reasons, its log)."""


def operator_problem(e2e: E2ECluster, *, image: str | None = None, min_restarts: int = 2) -> str | None:
    """Why the operator pod cannot become ready without a fix, or None while it still may: a
    container waiting for a reason in STUCK_REASONS (a crash loop once it has restarted
    `min_restarts` times, so one slow start is not taken for one). Pods on their way out, and
    with `image` the pods of another image (an earlier rollout's), are not the ones waited for."""
    proc = e2e.cluster.kubectl(
        "get", "pods", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR, "-o", "json", check=False
    )
    if proc.returncode != 0:
        return None
    for pod in json.loads(proc.stdout)["items"]:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        if image and image not in {c.get("image") for c in pod["spec"]["containers"]}:
            continue
        for container in pod.get("status", {}).get("containerStatuses") or []:
            reason = (container.get("state", {}).get("waiting") or {}).get("reason")
            restarts = container.get("restartCount", 0)
            if reason in STUCK_REASONS and (reason != "CrashLoopBackOff" or restarts >= min_restarts):
                return f"pod {pod['metadata']['name']}: container {container['name']} is {reason}"
            # A crash loop seen between its back-offs: the operator's readiness probe answers while
            # it cannot reach the API server, so the pod reads Running and Ready until it exits.
            exit_code = (container.get("lastState", {}).get("terminated") or {}).get("exitCode")
            if restarts >= CRASHES and exit_code:
                return (
                    f"pod {pod['metadata']['name']}: container {container['name']} crashed {restarts} times "
                    f"(last exit code {exit_code})"
                )
    return None


def operator_diagnosis(e2e: E2ECluster, log_lines: int = 20) -> str:
    """The operator pods' phase, each container's waiting/terminated reason and the last lines of
    its log (of the crashed run, if it crashed): what `make demo` prints when the chart fails."""
    proc = e2e.cluster.kubectl(
        "get", "pods", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR, "-o", "json", check=False
    )
    if proc.returncode != 0:
        return f"cannot list the operator pods: {proc.stderr.strip()}"
    pods = json.loads(proc.stdout)["items"]
    if not pods:
        events = e2e.cluster.kubectl(
            "get", "events", "-n", OPERATOR_NAMESPACE, "--sort-by=.lastTimestamp", check=False
        ).stdout
        return "no operator pod exists; events:\n" + "\n".join(events.splitlines()[-10:])
    lines = []
    for pod in pods:
        name, status = pod["metadata"]["name"], pod.get("status", {})
        lines.append(f"pod {name}: phase {status.get('phase')}, node {pod['spec'].get('nodeName') or '(none)'}")
        for condition in status.get("conditions") or []:
            if condition.get("status") != "True":
                lines.append(
                    f"  {condition['type']}=False: {condition.get('reason', '')} {condition.get('message', '')}"
                )
        for container in status.get("containerStatuses") or []:
            state = container.get("state", {})
            last = container.get("lastState", {}).get("terminated")
            for kind in ("waiting", "terminated"):
                if state.get(kind):
                    lines.append(
                        f"  container {container['name']} {kind}: {state[kind].get('reason')} "
                        f"{state[kind].get('message', '')}".rstrip()
                    )
            if last:
                lines.append(
                    f"  last run: {last.get('reason')}, exit code {last.get('exitCode')}, "
                    f"restarts {container.get('restartCount', 0)}"
                )
            if not (last or state.get("running") or state.get("terminated")):
                continue  # it never ran: no log
            logs = e2e.cluster.kubectl(
                "logs",
                "-n",
                OPERATOR_NAMESPACE,
                name,
                "-c",
                container["name"],
                f"--tail={log_lines}",
                *(["--previous"] if last else []),
                check=False,
            )
            text = (logs.stdout or logs.stderr).strip()
            if text:
                lines.append("  its last log lines:\n" + "\n".join(f"    {line}" for line in text.splitlines()))
    return "\n".join(lines)


def _stop_helm(helm: subprocess.Popen[str]) -> None:
    """SIGTERM first: helm then marks the release failed, which the next `helm upgrade` (the next
    `make demo`) can replace; a killed helm leaves it pending-upgrade, and every later upgrade fails
    with "another operation (install/upgrade/rollback) is in progress"."""
    if helm.poll() is not None:
        return
    helm.terminate()
    try:
        helm.wait(timeout=30)
    except subprocess.TimeoutExpired:
        helm.kill()


def install_chart(e2e: E2ECluster, images: dict[str, str], timeout: float = CHART_TIMEOUT) -> None:
    """`helm upgrade --install` with the locally built images; waits for the operator pod, and
    fails fast (OperatorNotReady, with the pod's state and log) when the pod is stuck in a way
    waiting does not mend (a crash loop, a missing image) or when helm fails or times out."""
    operator_repo, operator_tag = images["operator"].rsplit(":", 1)
    helm = subprocess.Popen(
        [
            str(binaries.find("helm")),
            "upgrade",
            "--install",
            HELM_RELEASE,
            str(ROOT / "charts" / "twlegal"),
            "--kubeconfig",
            str(e2e.cluster.kubeconfig),
            "--namespace",
            OPERATOR_NAMESPACE,
            "--create-namespace",
            "--set",
            f"image.repository={operator_repo}",
            "--set",
            f"image.tag={operator_tag}",
            "--set",
            "image.pullPolicy=Never",
            "--set",
            f"operator.trainerImage={images['trainer']}",
            "--set",
            f"operator.serverImage={images['server']}",
            "--set",
            "operator.resyncSeconds=10",
            "--wait",
            "--timeout",
            f"{int(timeout)}s",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout + 30
    try:
        while helm.poll() is None:
            problem = operator_problem(e2e, image=images["operator"])
            if problem or time.monotonic() > deadline:
                _stop_helm(helm)
                raise OperatorNotReady(
                    f"the operator did not become ready ({problem or f'{timeout:.0f}s passed'}):\n"
                    + operator_diagnosis(e2e)
                )
            time.sleep(3)
    finally:
        _stop_helm(helm)
        _, stderr = helm.communicate()
    if helm.returncode != 0:
        raise OperatorNotReady(f"helm upgrade --install failed: {stderr.strip()}\n" + operator_diagnosis(e2e))
    _wait_operator_settled(e2e, images["operator"], deadline)


def _operator_ready(e2e: E2ECluster, image: str) -> tuple[str, int] | None:
    """The ready operator pod of `image` as (name, restarts of its containers), or None."""
    proc = e2e.cluster.kubectl(
        "get", "pods", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR, "-o", "json", check=False
    )
    if proc.returncode != 0:
        return None
    for pod in json.loads(proc.stdout)["items"]:
        if pod["metadata"].get("deletionTimestamp") or image not in {c.get("image") for c in pod["spec"]["containers"]}:
            continue
        statuses = pod.get("status", {}).get("containerStatuses") or []
        if statuses and all(c.get("ready") for c in statuses):
            return pod["metadata"]["name"], sum(c.get("restartCount", 0) for c in statuses)
    return None


def _wait_operator_settled(e2e: E2ECluster, image: str, deadline: float) -> None:
    """The operator pod Ready, without a restart, for SETTLE_SECONDS in a row. `helm --wait` alone
    is not enough on a restarted cluster: etcd still holds the pod status from before the restart,
    Ready, until the new kubelet has restarted the container and reported it, so helm returns at
    once even when the operator is about to crash (as it did when the `kubernetes` Endpoints named
    a stale port). A crash later than that is the demo's to notice (operator_problem)."""
    ready_since: float | None = None
    seen: tuple[str, int] | None = None
    while True:
        now = time.monotonic()
        problem = operator_problem(e2e, image=image)
        ready = _operator_ready(e2e, image)
        if ready and seen and ready[0] == seen[0] and ready[1] > seen[1]:
            problem = f"pod {ready[0]} restarted while it should have settled"
        if problem or now > deadline:
            raise OperatorNotReady(
                f"the operator did not stay ready ({problem or 'time is up'}):\n" + operator_diagnosis(e2e)
            )
        if ready:
            if ready_since is None or seen is None or ready[0] != seen[0]:
                ready_since, seen = now, ready
            if now - ready_since >= SETTLE_SECONDS:
                return
        else:
            ready_since = None
        time.sleep(2)


def create_model_volume(e2e: E2ECluster, images: dict[str, str]) -> None:
    """examples/storage-local.yaml, as the README's install path applies it: the PVC releases name
    in spec.storage.pvc.claimName (local: bound to a hostPath PV; kind: from its storage class)
    and a long-lived loader pod that mounts it. The loader copies data in, reads results, and is the
    in-cluster client for chat requests (Service IPs work from pods on every kind of cluster)."""
    pv, pvc, loader = (doc for doc in yaml.safe_load_all(STORAGE_EXAMPLE.read_text()) if doc)
    for container in (*loader["spec"]["initContainers"], *loader["spec"]["containers"]):
        assert container["image"] == images["trainer"], "examples/storage-local.yaml names another image"
    if e2e.host_volume is not None:
        pv["spec"]["hostPath"]["path"] = str(e2e.host_volume)
        objects = [pv, pvc, loader]
    else:
        pvc["spec"]["storageClassName"] = e2e.storage_class
        objects = [pvc, loader]
    e2e.cluster.apply(objects)
    e2e.cluster.kubectl("wait", "-n", NAMESPACE, "--for=condition=Ready", f"pod/{LOADER}", "--timeout=180s")


def seed_volume(e2e: E2ECluster) -> None:
    """The tiny base model, datasets and benchmark where examples/release-tiny-cpu.yaml points."""
    with tempfile.TemporaryDirectory() as work:
        model = build_tiny_model(Path(work) / "model" / "tiny-llama")
        volume = make_volume(Path(work) / "volume", model)
        for entry in sorted(volume.iterdir()):
            e2e.cluster.kubectl("cp", "-n", NAMESPACE, str(entry), f"{LOADER}:{MOUNT}/{entry.name}")
    listing = in_loader(e2e, "ls", f"{MOUNT}/base/tiny-llama").stdout
    assert "config.json" in listing, listing


def in_loader(e2e: E2ECluster, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return e2e.cluster.kubectl("exec", "-n", NAMESPACE, LOADER, "-c", "loader", "--", *argv, check=check)


def read_volume_json(e2e: E2ECluster, path: str) -> dict | None:
    proc = in_loader(e2e, "cat", f"{MOUNT}/{path}", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def service_url(e2e: E2ECluster, service: str) -> str:
    svc = e2e.cluster.get_json("service", "-n", NAMESPACE, service)
    port = svc["spec"]["ports"][0]["port"]
    return f"http://{svc['spec']['clusterIP']}:{port}"


def api_key(e2e: E2ECluster, status: dict) -> str:
    """The target's API key (status.serving.apiKeySecret names its Secret and key), read as the
    cluster admin: what a user does with `kubectl get secret ... | base64 -d`."""
    secret, key = status["serving"]["apiKeySecret"].split("/", 1)
    data = e2e.cluster.get_json("secret", "-n", NAMESPACE, secret)["data"]
    return base64.b64decode(data[key]).decode()


def use_api_key(e2e: E2ECluster, key: str | None) -> None:
    """Hand the key to the in-cluster client through its key file (never a command line); None
    takes it away."""
    if key is None:
        in_loader(e2e, "rm", "-f", LOADER_KEY_FILE)
    else:
        e2e.cluster.kubectl(
            "exec",
            "-i",
            "-n",
            NAMESPACE,
            LOADER,
            "-c",
            "loader",
            "--",
            "sh",
            "-c",
            f"cat > {LOADER_KEY_FILE}.new && mv {LOADER_KEY_FILE}.new {LOADER_KEY_FILE}",
            input=key,
        )


def chat(e2e: E2ECluster, base_url: str, model: str, prompt: str) -> dict:
    """One chat completion and the served models, from inside the cluster."""
    proc = in_loader(e2e, "python3", "-c", CHAT_CLIENT, "once", base_url, model, prompt)
    return json.loads(proc.stdout)


@dataclass
class ClientLoop:
    """Chat requests in a loop from inside the cluster until stopped; one JSON line per request.

    The output goes to a file, not a pipe: an unread pipe fills at 64 KiB and then blocks the
    client inside the pod, which would silently stop asking mid-rollover."""

    e2e: E2ECluster
    base_url: str
    model: str
    process: subprocess.Popen | None = None
    output: Path | None = None

    def __enter__(self) -> ClientLoop:
        from .client import KUBECTL

        in_loader(self.e2e, "rm", "-f", "/tmp/stop-client")
        self.output = Path(tempfile.mkstemp(prefix="twlegal-client-", suffix=".jsonl")[1])
        with self.output.open("w") as out:
            self.process = subprocess.Popen(
                [
                    KUBECTL,
                    "--kubeconfig",
                    str(self.e2e.cluster.kubeconfig),
                    "exec",
                    "-n",
                    NAMESPACE,
                    LOADER,
                    "-c",
                    "loader",
                    "--",
                    "python3",
                    "-c",
                    CHAT_CLIENT,
                    "loop",
                    self.base_url,
                    self.model,
                    "民法第6條的內容是什麼？",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        return self

    def stop(self) -> list[dict]:
        in_loader(self.e2e, "touch", "/tmp/stop-client")
        self.process.wait(timeout=120)
        lines = self.output.read_text().splitlines()
        self.output.unlink()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        if not records:
            raise AssertionError(f"the client loop printed nothing: {lines[-5:]}")
        return records

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()


def dump_diagnostics(e2e: E2ECluster, out: Path) -> None:
    """What a failed run leaves behind: releases, pods, events and the operator's log."""
    out.mkdir(parents=True, exist_ok=True)
    for name, args in {
        "releases.yaml": ("get", "legalmodelreleases", "-A", "-o", "yaml"),
        "pods.txt": ("get", "pods", "-A", "-o", "wide"),
        "events.txt": ("get", "events", "-A", "--sort-by=.lastTimestamp"),
        "operator.log": ("logs", "-n", OPERATOR_NAMESPACE, "deployment/twlegal-operator", "--tail=400"),
    }.items():
        proc = e2e.cluster.kubectl(*args, check=False)
        (out / name).write_text(proc.stdout + proc.stderr)


def uninstall_chart(e2e: E2ECluster) -> None:
    subprocess.run(
        [
            str(binaries.find("helm")),
            "uninstall",
            HELM_RELEASE,
            "--namespace",
            OPERATOR_NAMESPACE,
            "--kubeconfig",
            str(e2e.cluster.kubeconfig),
            "--wait",
        ],
        check=True,
        capture_output=True,
    )
