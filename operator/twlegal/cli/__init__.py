"""`twlegal`: validate releases, render what the operator would create, print the CRD, run the
operator, follow a release until it serves, and write a release's history and model card from
what its runs reported.

One module per command group: release (validate, render, crd), operator, watch, docs (history, card).
Heavy imports (kopf, the kubernetes client, huggingface_hub) happen inside the commands that need them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from . import docs, operator, release, watch
from .release import crd_yaml

__all__ = ["build_parser", "crd_yaml", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twlegal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"twlegal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    release.add_parsers(sub)
    operator.add_parsers(sub)
    watch.add_parsers(sub)
    docs.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
