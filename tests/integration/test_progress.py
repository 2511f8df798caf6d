"""Watching a release train (issue 18) on the real control plane: the fake kubelet plays a trainer
that reports its progress the way the real one does (contracts/progress.py, on its pod's own
address), and the operator, `kubectl get lmr` and `twlegal watch` show it moving."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from tests.integration.test_lifecycle import events, release_doc, status, wait_phase
from tests.support.cluster import Cluster, in_ci, wait_for

WATCH = [sys.executable, "-m", "twlegal.cli", "watch"]


def progress(cluster: Cluster, namespace: str, name: str) -> dict:
    return status(cluster, namespace, name).get("progress") or {}


def test_progress_moves_in_status_and_in_kubectl_get_while_a_release_trains(
    cluster: Cluster, operator, fake_node, namespace
):
    fake_node.behave("tiny-p", training="hold", reports=True, total_steps=40, step_seconds=0.5)
    cluster.apply(release_doc(namespace, "tiny-p", "v0.1.0"))
    first = wait_for("progress in status", lambda: (p := progress(cluster, namespace, "tiny-p")).get("step") and p)
    later = wait_for(
        "progress to move on",
        lambda: (p := progress(cluster, namespace, "tiny-p")).get("step", 0) > first["step"] and p,
        timeout=30,
    )
    assert later["stage"] == "training" and later["total"] == 40 and later["summary"].endswith(f"({later['step']}/40)")
    assert later["loss"] < 4 and later["eta"] and later["tokensPerSecond"] == 1000.0
    table = cluster.kubectl("get", "lmr", "tiny-p", "-n", namespace).stdout.splitlines()
    header, row = table[0].split(), table[1]
    assert header[:5] == ["NAME", "VERSION", "PHASE", "PROGRESS", "ETA"], table
    assert "Training" in row and "%" in row, table
    wait_for("the first checkpoint's Event", lambda: "CheckpointSaved" in events(cluster, namespace, "tiny-p"))
    assert events(cluster, namespace, "tiny-p").count("CheckpointSaved") == 1

    fake_node.change("tiny-p", training="succeed")
    st = wait_phase(cluster, namespace, "tiny-p", "Serving")
    assert "progress" not in st, "a stage that ended reports no progress"


def test_a_resumed_attempt_says_from_which_step(cluster: Cluster, operator, fake_node, namespace):
    fake_node.behave("tiny-q", training="hold", reports=True, total_steps=40, resumed_from=20)
    cluster.apply(release_doc(namespace, "tiny-q", "v0.1.0"))
    wait_for("the resume's Event", lambda: "Resumed" in events(cluster, namespace, "tiny-q"))
    p = progress(cluster, namespace, "tiny-q")
    assert p["resumedFromStep"] == 20 and p["step"] >= 20
    # The operator never saw this run's first checkpoint (the release is new to it): the resumed
    # attempt's first report tells it, once, beside the resume.
    fake_node.change("tiny-q", training="succeed")
    wait_phase(cluster, namespace, "tiny-q", "Serving")
    told = events(cluster, namespace, "tiny-q")
    assert told.count("CheckpointSaved") == 1 and told.count("Resumed") == 1, told


def _watch(
    cluster: Cluster, namespace: str, name: str, *extra: str, timeout: float = 120
) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    return subprocess.run(
        [*WATCH, name, "-n", namespace, "--interval", "0.5", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_twlegal_watch_without_a_terminal_prints_plain_lines_and_exits_with_the_outcome(
    cluster: Cluster, operator, fake_node, namespace
):
    fake_node.behave("tiny-w", reports=True, total_steps=10, step_seconds=0.4, run_seconds=3)
    cluster.apply(release_doc(namespace, "tiny-w", "v0.1.0"))
    done = _watch(cluster, namespace, "tiny-w")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "\x1b" not in done.stdout, "no escape codes without a terminal"
    assert lines[-1].startswith("tiny-w: Serving")
    phases = [line.split(":")[0] for line in lines[:-1]]
    assert phases[-1] == "Serving" and "Training" in phases, lines

    fake_node.behave("tiny-bad", score=10.0)
    bad = release_doc(namespace, "tiny-bad", "v0.2.0")
    cluster.apply(bad)
    rejected = _watch(cluster, namespace, "tiny-bad", "--output", "json")
    assert rejected.returncode == 1 and "below minScore" in rejected.stderr, rejected.stderr
    assert rejected.stdout.splitlines()[-1].startswith('{"phase": "Rejected"')
    assert _watch(cluster, namespace, "no-such-release").returncode == 2


def test_twlegal_watch_in_a_real_terminal_draws_a_progress_bar(cluster: Cluster, operator, fake_node, namespace):
    tmux = shutil.which("tmux")
    if tmux is None:
        if in_ci():
            pytest.fail("tmux is missing (hack/ensure-host.sh installs it)", pytrace=False)
        pytest.skip("tmux is missing")
    fake_node.behave("tiny-t", training="hold", reports=True, total_steps=40, step_seconds=0.5)
    cluster.apply(release_doc(namespace, "tiny-t", "v0.1.0"))
    session = f"twlegal-watch-{uuid.uuid4().hex[:8]}"
    command = " ".join(
        [
            f"KUBECONFIG={cluster.kubeconfig}",
            *WATCH,
            "tiny-t",
            "-n",
            namespace,
            "--interval",
            "0.5",
            "; echo WATCH-EXIT=$?; sleep 600",
        ]
    )
    subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "120", "-y", "20", command], check=True)

    def pane() -> str:
        return subprocess.run([tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

    try:
        bar = wait_for(
            "a progress bar with steps, loss and ETA",
            lambda: (
                (text := pane()) and "Training" in text and "/40" in text and "ETA" in text and "━" in text and text
            ),
            timeout=60,
        )
        fake_node.change("tiny-t", training="succeed")
        end = wait_for("the watch to end", lambda: "WATCH-EXIT=" in (text := pane()) and text, timeout=90)
        assert "WATCH-EXIT=0" in end and "tiny-t: Serving" in end, end
        assert "loss" in bar, bar
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], check=False)
        time.sleep(0.1)
