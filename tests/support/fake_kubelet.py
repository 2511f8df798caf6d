"""A stand-in kubelet that plays the kubelet's part through the API (integration tests, benchmarks).

It registers a Node with GPU capacity, keeps its heartbeat, and moves the pods the real scheduler
binds to it through their lifecycle by writing pod status, as a kubelet would. What each pod does
is chosen per release (`behave`): a training pod succeeds with a trainer result in its termination
message, fails with a code error, or diverges; an evaluation pod reports a score; a serving pod
becomes ready or never does. A storage pod (retention, reclaim) runs the trainer image's real
`twlegal-train storage` command on the hostPath behind its claim, as a kubelet would mount it.
Everything else (Jobs, Deployments, ReplicaSets, garbage collection, scheduling) is the real
Kubernetes controllers' work.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from twlegal.contracts import EvaluationResult, TrainingResult
from twlegal.contracts.storage import StorageTask
from twlegal.contracts.termination import TERMINATION_LOG_ENV
from twlegal.contracts.training import ExitCode

NODE = "twlegal-fake-gpu-0"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Waiting reasons of pods that never start, as the kubelet words them.
_NEVER_STARTS = {
    "image-pull": ("ImagePullBackOff", 'Back-off pulling image "{image}"'),
    "config-error": ("CreateContainerConfigError", 'secret "hf-token" not found'),
}


@dataclass
class Behaviour:
    # succeed | fail | diverge | hold | oom (exit 137, OOMKilled) | image-pull (ImagePullBackOff, never
    # runs) | config-error (CreateContainerConfigError: a missing Secret or key, never runs)
    training: str = "succeed"
    final_loss: float = 0.42
    evaluation: str = "score"  # score | hold
    score: float = 55.0
    serving: str = "ready"  # ready | never-ready | hold (not ready until changed to ready)
    run_seconds: float = 0.5
    checksum: str = "sha256:" + "ab" * 32  # of the weights' manifest, as the trainer reports it
    # A training pod that reports progress as the trainer does (contracts/progress.py), on its own
    # loopback address (127.0.0.N, its podIP) and the real port: a step every `step_seconds` up to
    # `total_steps`, a checkpoint every 10 steps, `resumed_from` when it resumed.
    reports: bool = False
    total_steps: int = 40
    step_seconds: float = 0.5
    resumed_from: int | None = None


@dataclass
class FakeKubelet:
    api: client.ApiClient
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)
    _done: set[str] = field(default_factory=set)
    _storage: set[str] = field(default_factory=set)  # storage pods whose command has been started
    _stop: threading.Event = field(default_factory=threading.Event)
    _ip: int = 10
    _loopback: int = 1  # the last 127.0.0.N handed to a reporting pod
    _reporters: dict[str, Any] = field(default_factory=dict)  # pod uid -> its progress server
    # Called as on_finish(release, component, monotonic_time) when a Job's pod ends (benchmarks).
    on_finish: Any = None

    def behave(self, release: str, **kwargs: Any) -> None:
        self.behaviours[release] = Behaviour(**kwargs)

    def change(self, release: str, **kwargs: Any) -> None:
        """Change what a release's pods do next (e.g. a held stage: training="succeed")."""
        behaviour = self.behaviours.setdefault(release, Behaviour())
        for key, value in kwargs.items():
            setattr(behaviour, key, value)

    # --- node ----------------------------------------------------------------------------------
    def start(self) -> FakeKubelet:
        core = client.CoreV1Api(self.api)
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE,
                "labels": {
                    "kubernetes.io/hostname": NODE,
                    "twlegal.io/fake": "true",
                    "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
                },
            },
        }
        try:
            core.create_node(node)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self._heartbeat()
        threading.Thread(target=self._loop, name="fake-kubelet", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for reporter in list(self._reporters.values()):
            reporter.close()

    def _heartbeat(self) -> None:
        core = client.CoreV1Api(self.api)
        capacity = {
            "cpu": "1024",
            "memory": "8Ti",
            "pods": "2000",
            "nvidia.com/gpu": "4096",
            "ephemeral-storage": "1Ti",
        }
        now = _now()
        status = {
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "fake kubelet is posting ready status",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
                "nodeInfo": {
                    "kubeletVersion": "v1.36.3",
                    "containerRuntimeVersion": "fake://0",
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "osImage": "fake",
                    "kernelVersion": "0",
                    "kubeProxyVersion": "",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            }
        }
        core.patch_node_status(NODE, status)
        lease_api = client.CoordinationV1Api(self.api)
        lease = {
            "metadata": {"name": NODE, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": NODE,
                "leaseDurationSeconds": 40,
                "renewTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
        }
        try:
            lease_api.patch_namespaced_lease(NODE, "kube-node-lease", {"spec": lease["spec"]})
        except ApiException as exc:
            if exc.status != 404:
                raise
            lease_api.create_namespaced_lease("kube-node-lease", lease)

    def _loop(self) -> None:
        core = client.CoreV1Api(self.api)
        last_beat = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_beat > 10:
                    last_beat = time.monotonic()
                    self._heartbeat()
            except Exception as exc:  # noqa: BLE001 - a test helper must keep running
                print(f"fake-kubelet heartbeat: {exc}")
            try:
                pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE}").items
                for pod in pods:
                    self._step(core, pod)
            except Exception as exc:  # noqa: BLE001 - a test helper must keep running
                print(f"fake-kubelet: {exc}")
            self._stop.wait(0.2)

    # --- pods ----------------------------------------------------------------------------------
    def _step(self, core: client.CoreV1Api, pod: Any) -> None:
        meta = pod.metadata
        if meta.deletion_timestamp is not None:
            with contextlib.suppress(ApiException):
                core.delete_namespaced_pod(meta.name, meta.namespace, grace_period_seconds=0)
            return
        if meta.uid in self._done:
            return
        labels = meta.labels or {}
        component = labels.get("app.kubernetes.io/component")
        behaviour = self.behaviours.get(labels.get("twlegal.io/release", ""), Behaviour())
        container = pod.spec.containers[0].name
        running = {"running": {"startedAt": _now()}}
        if meta.uid not in self._started and component == "training" and behaviour.training in _NEVER_STARTS:
            self._started[meta.uid] = time.monotonic()
            reason, message = _NEVER_STARTS[behaviour.training]
            waiting = {"waiting": {"reason": reason, "message": message.format(image=pod.spec.containers[0].image)}}
            self._write(core, pod, "Pending", container, ready=False, state=waiting)
            self._done.add(meta.uid)
            return
        if meta.uid not in self._started:
            self._started[meta.uid] = time.monotonic()
            ready = not (component == "serving" and behaviour.serving in ("never-ready", "hold"))
            ip = self._report(meta.uid, behaviour) if component == "training" and behaviour.reports else None
            self._write(core, pod, "Running", container, ready=ready, state=running, ip=ip)
            if component == "serving" and behaviour.serving != "hold":
                self._done.add(meta.uid)
            return
        if component == "serving":
            if behaviour.serving == "ready":  # released from hold
                self._write(core, pod, "Running", container, ready=True, state=running)
                self._done.add(meta.uid)
            return
        if component == "storage":
            if meta.uid not in self._storage:  # a real command: off the loop, so other pods move on
                self._storage.add(meta.uid)
                threading.Thread(target=self._storage_pod, args=(core, pod, container), daemon=True).start()
            return
        if component not in ("training", "evaluation"):
            return
        if time.monotonic() - self._started[meta.uid] < behaviour.run_seconds:
            return
        if component == "training":
            if behaviour.training == "hold":
                return
            if behaviour.training == "oom":  # the kernel's OOM killer: SIGKILL, no result written
                self._finish(core, pod, container, 137, "", reason="OOMKilled")
                return
            code, message = self._training_outcome(behaviour, labels)
        elif behaviour.evaluation == "hold":
            return
        else:
            code, message = (
                0,
                EvaluationResult(
                    benchmark="fixture", score=behaviour.score, correct=int(behaviour.score), total=100
                ).termination_message(),
            )
        self._finish(core, pod, container, code, message)
        if self.on_finish:
            self.on_finish(labels.get("twlegal.io/release", ""), component, time.monotonic())

    def _finish(
        self, core: client.CoreV1Api, pod: Any, container: str, code: int, message: str, reason: str = ""
    ) -> None:
        state = {
            "terminated": {
                "exitCode": code,
                "reason": reason or ("Completed" if code == 0 else "Error"),
                "message": message,
                "startedAt": _now(),
                "finishedAt": _now(),
            }
        }
        self._write(core, pod, "Succeeded" if code == 0 else "Failed", container, ready=False, state=state)
        self._done.add(pod.metadata.uid)
        reporter = self._reporters.pop(pod.metadata.uid, None)
        if reporter is not None:
            reporter.close()

    def _report(self, uid: str, behaviour: Behaviour) -> str:
        """Serve a trainer's progress for a pod on a loopback address of its own; returns it (the
        pod's IP, which the operator connects to)."""
        from twlegal.contracts.progress import PORT
        from twlegal_trainer.progress import ProgressServer

        self._loopback += 1
        ip = f"127.0.0.{self._loopback}"
        server = ProgressServer("training", PORT, host=ip)
        started = time.monotonic()
        self._reporters[uid] = server

        def advance() -> None:
            while uid in self._reporters and not self._stop.is_set():
                elapsed = time.monotonic() - started
                first = behaviour.resumed_from or 0
                step = min(behaviour.total_steps, first + int(elapsed / behaviour.step_seconds))
                done = max(step - first, 0)
                checkpoint = step // 10 * 10 or behaviour.resumed_from
                server.update(
                    step=step,
                    total=behaviour.total_steps,
                    epoch=2.0 * step / behaviour.total_steps,
                    loss=round(4.0 / (1 + step), 4),
                    learning_rate=2e-5,
                    tokens_per_second=1000.0,
                    eta_seconds=elapsed / done * (behaviour.total_steps - step) if done else None,
                    resumed_from_step=behaviour.resumed_from,
                    checkpoint_step=checkpoint or None,
                )
                time.sleep(0.1)

        threading.Thread(target=advance, name=f"fake-trainer-{ip}", daemon=True).start()
        return ip

    @staticmethod
    def _host_path(core: client.CoreV1Api, pod: Any) -> str:
        """The hostPath of the PersistentVolume bound to the pod's claim (what a kubelet mounts)."""
        claim = next(v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim)
        pvc = core.read_namespaced_persistent_volume_claim(claim, pod.metadata.namespace)
        return core.read_persistent_volume(pvc.spec.volume_name).spec.host_path.path

    def _storage_pod(self, core: client.CoreV1Api, pod: Any, container: str) -> None:
        try:
            code, message = self._run_storage(core, pod)
        except Exception as exc:  # noqa: BLE001 - reported as the pod's failure
            code, message = 1, f"fake kubelet could not run the storage command: {exc!r}"
        self._finish(core, pod, container, code, message)

    def _run_storage(self, core: client.CoreV1Api, pod: Any) -> tuple[int, str]:
        """The storage Job's real command, its volume paths moved onto the hostPath."""
        spec = pod.spec.containers[0]
        mount = spec.volume_mounts[0].mount_path
        host = self._host_path(core, pod)
        task = StorageTask.model_validate_json(spec.args[spec.args.index("--task") + 1])
        moved = task.model_copy(
            update={
                "checkpoint_dir": task.checkpoint_dir.replace(mount, host, 1),
                "artifact_dir": task.artifact_dir.replace(mount, host, 1) if task.artifact_dir else None,
            }
        )
        with tempfile.TemporaryDirectory() as work:
            log = str(Path(work) / "termination-log")
            proc = subprocess.run(
                [sys.executable, "-m", "twlegal_trainer.cli", "storage", "--task", moved.to_arg()],
                env={**os.environ, TERMINATION_LOG_ENV: log},
                capture_output=True,
                text=True,
                timeout=120,
            )
            written = Path(log)
            message = written.read_text(encoding="utf-8") if written.exists() else proc.stderr[-2000:]
        return proc.returncode, message.replace(host, mount)

    @staticmethod
    def _training_outcome(behaviour: Behaviour, labels: dict[str, str]) -> tuple[int, str]:
        release = labels.get("twlegal.io/release", "")
        if behaviour.training == "fail":
            return int(ExitCode.FAILED), "Traceback (most recent call last):\nKeyError: 'messages' in dataset 0"
        if behaviour.training == "diverge":
            result = TrainingResult(
                outcome="Diverged", message="loss became nan at step 7", global_step=7, total_steps=40
            )
            return int(ExitCode.DIVERGED), result.termination_message()
        result = TrainingResult(
            outcome="Succeeded",
            final_loss=behaviour.final_loss,
            global_step=40,
            total_steps=40,
            epochs=2,
            runtime_seconds=12.5,
            samples_per_second=51.2,
            tokens_per_second=13107.2,
            total_flos=1.5e12,
            checkpoint=f"/mnt/twlegal/checkpoints/{release}/checkpoint-40",
            artifact_path=f"/mnt/twlegal/releases/{release}",
            checksum=behaviour.checksum,
        )
        return 0, result.termination_message()

    def _write(
        self,
        core: client.CoreV1Api,
        pod: Any,
        phase: str,
        container: str,
        *,
        ready: bool,
        state: dict[str, Any],
        ip: str | None = None,
    ) -> None:
        now = _now()
        ip = ip or (pod.status.pod_ip if pod.status and pod.status.pod_ip else None)
        if ip is None:
            self._ip += 1
            ip = f"10.244.{self._ip // 250}.{self._ip % 250 + 1}"
        ready_s = "True" if ready else "False"
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": ready_s, "lastTransitionTime": now},
                {"type": "Ready", "status": ready_s, "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": container,
                    "ready": ready,
                    "restartCount": 0,
                    "started": "running" in state,
                    "image": pod.spec.containers[0].image,
                    "imageID": "fake://" + pod.spec.containers[0].image,
                    "state": state,
                }
            ],
        }
        try:
            core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})
        except ApiException as exc:
            if exc.status != 404:
                raise
