"""`twlegal operator`: run the operator (kopf and the kubernetes client are imported only here)."""

from __future__ import annotations

import argparse


def cmd_operator(args: argparse.Namespace) -> int:
    from ..handlers import run

    run(namespaces=args.namespace or None, liveness_port=args.liveness_port)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("operator", help="run the operator (KUBECONFIG or in-cluster credentials)")
    p.add_argument(
        "-n", "--namespace", action="append", help="watch only this namespace (repeatable); default: all namespaces"
    )
    p.add_argument("--liveness-port", type=int, default=8081, help="port of /healthz (0: off)")
    p.set_defaults(func=cmd_operator)
