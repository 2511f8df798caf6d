"""Every route but health needs the key: an ASGI middleware vLLM loads with `--middleware`.

vLLM's own `--api-key` check guards only paths under /v1, /v2, /inference and /cohere: on vLLM
0.32.0 `POST /invocations` answered a full chat completion without a key, and `/tokenize`,
`/metrics`, `/openapi.json` and the rest answered too. This middleware sits in front of all of
them and lets only the kubelet's probes through (they carry no credentials). /metrics needs the
key as well: Prometheus scrapes with it as a bearer token, since a NetworkPolicy cannot tell the
paths of one port apart.

The keys come from the environment (never argv), are kept only as SHA-256 digests and compared in
constant time; the previous key is accepted too while a rotation rolls the pods. CORS preflights
(OPTIONS) are refused like any other request: CORS is off (the launcher refuses `--allowed-origins`),
so no browser is meant to call this server.

vLLM adds `--middleware` classes after its own, so this one is the outermost (it runs before CORS,
vLLM's own key check and every route, mounted apps such as /metrics included). It has no off
switch: the launcher loads it only when the release's auth is apiKey, and without TWLEGAL_API_KEY it
refuses to be built, so vLLM does not start rather than serve openly.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from twlegal.contracts.serving import API_KEY_ENV, PREVIOUS_API_KEY_ENV, UNAUTHENTICATED_PATHS

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class MissingKey(RuntimeError):
    """No key to check against: the server would be open, so it does not start."""


def accepted_digests(env: Mapping[str, str]) -> list[bytes]:
    # Stripped: a Secret made from a file often ends in a newline no client sends.
    keys = [env.get(API_KEY_ENV, "").strip(), env.get(PREVIOUS_API_KEY_ENV, "").strip()]
    if not keys[0]:
        raise MissingKey(f"{API_KEY_ENV} is not set: refusing to serve without a key")
    return [hashlib.sha256(key.encode()).digest() for key in keys if key]


def bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class RequireApiKey:
    def __init__(self, app: App, env: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.digests = accepted_digests(os.environ if env is None else env)

    def allowed(self, token: str | None) -> bool:
        if token is None:
            return False
        digest = hashlib.sha256(token.encode()).digest()
        match = False
        for accepted in self.digests:  # no early exit: the time does not tell which key matched
            match |= secrets.compare_digest(digest, accepted)
        return match

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan: start-up and shutdown
            await self.app(scope, receive, send)
            return
        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        # The exact paths only (no prefix: `/health/../tokenize` or `/healthz` are not health), and
        # only over HTTP: a probe never opens a websocket.
        probe = scope["type"] == "http" and path in UNAUTHENTICATED_PATHS
        if probe or self.allowed(bearer(scope.get("headers") or [])):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": "Unauthorized"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b"Bearer"),
        ]
        if scope["type"] == "websocket":
            if "websocket.http.response" in (scope.get("extensions") or {}):  # uvicorn: a plain 401
                await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
                await send({"type": "websocket.http.response.body", "body": body})
            else:  # the server answers the handshake with 403
                await send({"type": "websocket.close", "code": 1008})  # policy violation
            return
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})
