"""`twlegal operator`: run the operator (kopf and the kubernetes client are imported only here)."""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def cmd_operator(args: argparse.Namespace) -> int:
    from ..handlers import run

    namespaces, port = args.namespace or None, args.liveness_port
    elect = args.leader_elect
    if elect is None:  # neither flag given: TWLEGAL_LEADER_ELECT (the chart's value), on by default
        elect = os.environ.get("TWLEGAL_LEADER_ELECT", "true").strip().lower() not in ("false", "0", "no", "off")
    if not elect:
        run(namespaces=namespaces, liveness_port=port)
        return 0

    import kopf

    from ..leader import lead, settings_from_env

    kopf.configure(verbose=False)  # the standby's lines as the leader's (run() configures it again)
    settings = settings_from_env(os.environ, namespace=args.lease_namespace)
    # A standby answers its liveness probe itself; the leader's kopf binds the same port, so the
    # standby's server is closed first.
    close_health = serve_health(port) if port else lambda: None

    def leading(stop: threading.Event) -> None:
        close_health()

        # kopf waits for a threading.Event on an executor thread, which asyncio.run joins at exit:
        # stopped by a signal, the process would hang there, never releasing the Lease, unless the
        # flag is set then too.
        @kopf.on.cleanup()
        def unblock_stop_flag(**_: Any) -> None:
            stop.set()

        run(namespaces=namespaces, liveness_port=port, stop_flag=stop)

    try:
        return lead(settings, leading)
    finally:
        close_health()


def serve_health(port: int) -> Callable[[], None]:
    """/healthz answering 200 while standing by (the pod is live and ready: a rolling update waits for
    it). Returns the function that stops it and frees the port; calling it again does nothing."""

    class Healthz(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path.split("?")[0] == "/healthz"
            self.send_response(200 if found else 404)
            self.end_headers()
            self.wfile.write(b"standing by\n" if found else b"")

        def log_message(self, *_: Any) -> None:  # a probe every 10s is no news
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Healthz)
    threading.Thread(target=server.serve_forever, name="twlegal-standby-healthz", daemon=True).start()
    closed = threading.Lock()

    def close() -> None:
        if closed.acquire(blocking=False):
            server.shutdown()
            server.server_close()

    return close


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("operator", help="run the operator (KUBECONFIG or in-cluster credentials)")
    p.add_argument(
        "-n", "--namespace", action="append", help="watch only this namespace (repeatable); default: all namespaces"
    )
    p.add_argument("--liveness-port", type=int, default=8081, help="port of /healthz (0: off)")
    p.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="act only while holding the Lease twlegal-operator, so replicas can stand by "
        "(default: on; TWLEGAL_LEADER_ELECT=false turns it off)",
    )
    p.add_argument(
        "--lease-namespace", help="namespace of the Lease (default: POD_NAMESPACE, else the kubeconfig's namespace)"
    )
    p.set_defaults(func=cmd_operator)
