"""The middleware that closes every vLLM route but health, with a fake ASGI app (no vLLM)."""

from __future__ import annotations

import asyncio
import json

import pytest

from twlegal_server.auth import MissingKey, RequireApiKey

ENV = {"TWLEGAL_API_KEY": "current-key", "TWLEGAL_API_KEY_PREVIOUS": "old-key"}


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def call(path, token=None, *, kind="http", method="GET", env=ENV, extensions=None):
    sent = []
    headers = [(b"authorization", f"Bearer {token}".encode())] if token is not None else []

    async def receive():
        return {"type": "http.request"}

    async def send(message):
        sent.append(message)

    scope = {"type": kind, "path": path, "method": method, "headers": headers, "extensions": extensions or {}}
    asyncio.run(RequireApiKey(app, env)(scope, receive, send))
    return sent[0]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions",
        "/invocations",
        "/tokenize",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/version",
        "/",
        "/v1/models",
    ],
)
def test_every_route_needs_the_key(path):
    assert call(path)["status"] == 401
    assert call(path, "wrong")["status"] == 401
    assert call(path, "")["status"] == 401
    assert call(path, "current-key")["status"] == 200
    assert call(path, "old-key")["status"] == 200, "the previous key works while a rotation rolls"
    denied = call(path)
    assert (b"www-authenticate", b"Bearer") in denied["headers"]


@pytest.mark.parametrize("path", ["/health", "/ping"])
def test_probes_need_no_key(path):
    assert call(path)["status"] == 200


def test_preflight_and_websockets_are_refused_without_the_key():
    assert call("/v1/models", method="OPTIONS")["status"] == 401
    assert call("/v1/realtime", kind="websocket") == {"type": "websocket.close", "code": 1008}
    assert call("/health", kind="websocket") == {"type": "websocket.close", "code": 1008}, "probes are HTTP"
    assert call("/v1/realtime", "current-key", kind="websocket") == {"type": "websocket.accept"}
    assert call("/v1/realtime", "old-key", kind="websocket") == {"type": "websocket.accept"}
    denied = call("/v1/realtime", kind="websocket", extensions={"websocket.http.response": {}})
    assert denied["type"] == "websocket.http.response.start" and denied["status"] == 401, "uvicorn: a plain 401"


def test_only_the_exact_probe_paths_are_open():
    for path in ("/healthz", "/health/", "/ping/x", "//health", "/v1/health"):
        assert call(path)["status"] == 401, path
    assert call("/health", method="HEAD")["status"] == 200
    assert call("/v1/models", method="HEAD")["status"] == 401


def test_another_scheme_is_no_key():
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {}

    scope = {"type": "http", "path": "/v1/models", "headers": [(b"authorization", b"Basic current-key")]}
    asyncio.run(RequireApiKey(app, ENV)(scope, receive, send))
    assert sent[0]["status"] == 401


def test_without_a_key_the_middleware_refuses_to_exist():
    with pytest.raises(MissingKey, match="TWLEGAL_API_KEY is not set"):
        RequireApiKey(app, {})
    with pytest.raises(MissingKey):
        RequireApiKey(app, {"TWLEGAL_API_KEY": "  \n", "TWLEGAL_API_KEY_PREVIOUS": "old-key"})
    with pytest.raises(MissingKey) as err:
        RequireApiKey(app, {"TWLEGAL_API_KEY_PREVIOUS": "old-key"})
    assert "old-key" not in str(err.value), "no key value in the message"


def test_a_key_from_a_file_keeps_no_trailing_newline():
    assert call("/v1/models", "current-key", env={"TWLEGAL_API_KEY": "current-key\n"})["status"] == 200
    assert call("/v1/models", "current-key", env={"TWLEGAL_API_KEY": "other"})["status"] == 401


def test_the_401_body_is_small_json():
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request"}

    scope = {"type": "http", "path": "/invocations", "method": "POST", "headers": []}
    asyncio.run(RequireApiKey(app, ENV)(scope, receive, send))
    assert sent[0]["status"] == 401 and (b"content-type", b"application/json") in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == {"error": "Unauthorized"}
