"""`twlegal history` and `twlegal card`: a release's documentation, from the cluster or from files.

Releases are read from the API server (KUBECONFIG, as kubectl does) or from exported objects
(`kubectl get lmr -o yaml > releases.yaml`, one file or a folder of them), so the same commands
work in CI on captured objects and against a live cluster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import yamlio
from ..api.release import KIND, LegalModelRelease


def _from_files(path: str) -> list[LegalModelRelease]:
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml", ".json")) if root.is_dir() else [root]
    releases = []
    try:
        for file in files:
            for doc in yamlio.load_all(file.read_text(encoding="utf-8")):
                # `kubectl get -o yaml` of several objects is a List; a folder may hold other kinds.
                items = doc.get("items", []) if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
                releases += [
                    LegalModelRelease.from_object(item)
                    for item in items
                    if isinstance(item, dict) and item.get("kind") == KIND
                ]
    except OSError as exc:
        raise SystemExit(f"twlegal: cannot read {path}: {exc.strerror}") from exc
    return releases


def _from_cluster(namespace: str | None) -> tuple[list[LegalModelRelease], str]:
    from ..kube import Kube, current_namespace  # the kubernetes client: only when reading a cluster

    namespace = namespace or current_namespace()
    return [LegalModelRelease.from_object(obj) for obj in Kube().list_releases(namespace)], namespace


def _releases(args: argparse.Namespace) -> tuple[list[LegalModelRelease], str]:
    if args.source:
        releases = _from_files(args.source)
        if args.namespace:
            releases = [r for r in releases if r.namespace == args.namespace]
        return releases, args.namespace or "any namespace"
    return _from_cluster(args.namespace)


def cmd_history(args: argparse.Namespace) -> int:
    from ..docs import history

    releases, where = _releases(args)
    rows = history.rows(history.of_target(releases, args.target))
    if not rows:
        print(f"twlegal: no releases of {args.target} in {where}", file=sys.stderr)
        return 1
    render = {"table": history.table, "markdown": history.markdown}.get(args.output)
    sys.stdout.write(render(rows) if render else history.to_json(args.target, rows))
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from ..docs import card  # huggingface_hub: only for this command

    releases, where = _releases(args)
    found = [r for r in releases if r.name == args.release]
    if not found:
        print(f"twlegal: no release {args.release} in {where}", file=sys.stderr)
        return 1
    if len(found) > 1:
        print(f"twlegal: {args.release} is in several namespaces; choose one with -n", file=sys.stderr)
        return 1
    text = card.render(found[0], releases)
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    source = argparse.ArgumentParser(add_help=False)
    source.add_argument("-n", "--namespace", help="namespace of the releases (default: the kubeconfig context's)")
    source.add_argument(
        "--from",
        dest="source",
        metavar="PATH",
        help="read exported release objects from a file or a folder instead of the cluster",
    )

    p = sub.add_parser(
        "history",
        parents=[source],
        help="a serving target's releases: version, date, phase, score, reason",
        description="Print the releases of TARGET (a spec.serving.target or a spec.model), newest version "
        "first: version, date, phase, score and a one-line reason, all from their status.",
    )
    p.add_argument("target", metavar="TARGET")
    p.add_argument(
        "-o",
        "--output",
        choices=("table", "markdown", "json"),
        default="table",
        help="table (default), markdown (the model card's table) or json",
    )
    p.set_defaults(func=cmd_history)

    p = sub.add_parser(
        "card",
        parents=[source],
        help="the Hugging Face model card of a release, from its spec and status",
        description="Render the model card of RELEASE (YAML front matter with base_model, datasets, license, "
        "model-index; training procedure, hyperparameters, results, update history, how to serve the "
        "pinned revision). Figures come from status only; missing ones are shown as not reported.",
    )
    p.add_argument("release", metavar="RELEASE")
    p.add_argument("--write", metavar="FILE", help="write the card to FILE (e.g. README.md) instead of stdout")
    p.set_defaults(func=cmd_card)
