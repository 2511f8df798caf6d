"""`twlegal watch RELEASE`: follow one release until it settles, in the terminal or in a pipeline.

    kubectl apply -f release.yaml && twlegal watch taiwan-legal-3b-v2024-11-13

On a terminal a progress bar (rich) follows the phases: queued, training with step, loss and ETA,
evaluating, rolling out. Without one (a CI log) each change is one plain line, no escape codes;
`--output json` prints one JSON object per change. It exits 0 once the release serves (or is
Completed, or Superseded), 1 when it failed, was rejected or rolled back (the reason printed),
2 when the release does not exist, 3 on --timeout. Reads the release every --interval seconds
(the kubernetes client; kubectl's KUBECONFIG).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from ..docs.watch import Snapshot, outcome, snapshot

NOT_FOUND, TIMED_OUT = 2, 3


def follow(
    read: Callable[[], dict[str, Any] | None], interval: float, timeout: float | None
) -> Iterator[Snapshot | None]:
    """Snapshots of the release whenever they change; None once when it is gone (or never was).
    Ends when it settles, or at the timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    while deadline is None or time.monotonic() < deadline:
        obj = read()
        if obj is None:
            yield None
            return
        snap = snapshot(obj)
        if snap != last:
            yield snap
            last = snap
        if outcome(snap) is not None:
            return
        time.sleep(interval)


def _plain(snaps: Iterator[Snapshot | None], out: TextIO, as_json: bool) -> Snapshot | None:
    last = None
    for snap in snaps:
        if snap is None:
            return None
        out.write((json.dumps(snap.to_json(), ensure_ascii=False) if as_json else snap.line()) + "\n")
        out.flush()
        last = snap
    return last


def _terminal(snaps: Iterator[Snapshot | None], name: str) -> Snapshot | None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    console = Console()
    columns = (
        TextColumn("[bold]{task.fields[phase]}[/bold]"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    last = None
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(name, total=None, phase="Queued", detail="")
        for snap in snaps:
            if snap is None:
                return None
            if last is None or snap.phase != last.phase:
                bar.console.print(f"{snap.phase}: {snap.message or snap.step}")
            detail = ", ".join(
                part
                for part in (
                    f"{snap.done}/{snap.total}" if snap.total else "",
                    f"loss {snap.loss:.4g}" if snap.loss is not None else "",
                    f"ETA {snap.eta}" if snap.eta else "",
                    f"score {snap.score:g}" if snap.score is not None else "",
                )
                if part
            )
            total: int | None
            if snap.total:
                total, completed = snap.total, snap.done or 0
            else:  # no stage that counts: full once settled, else an indeterminate (pulsing) bar
                total, completed = (1, 1) if outcome(snap) is not None else (None, 0)
            bar.update(task, total=total, completed=completed, phase=snap.phase, detail=detail)
            last = snap
    return last


def cmd_watch(args: argparse.Namespace) -> int:
    from ..kube import Kube, current_namespace  # the kubernetes client: only when reading a cluster

    namespace = args.namespace or current_namespace()
    kube = Kube()
    snaps = follow(lambda: kube.get_release(namespace, args.release), args.interval, args.timeout)
    if args.output == "json" or not sys.stdout.isatty():
        last = _plain(snaps, sys.stdout, args.output == "json")
    else:
        last = _terminal(snaps, args.release)
    if last is None:
        print(f"twlegal: no release {args.release} in namespace {namespace}", file=sys.stderr)
        return NOT_FOUND
    code = outcome(last)
    if code is None:
        print(f"twlegal: {args.release} is still {last.phase} after {args.timeout:g} s", file=sys.stderr)
        return TIMED_OUT
    if code:
        print(f"twlegal: {args.release} ended {last.phase}: {last.message}", file=sys.stderr)
    elif args.output != "json":
        print(f"{args.release}: {last.phase}" + (f" at {last.serving}" if last.serving else ""))
    return code


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "watch",
        help="follow a release until it serves (exit 0) or fails (exit 1)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("release", metavar="RELEASE")
    p.add_argument("-n", "--namespace", help="namespace of the release (default: the kubeconfig context's)")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="text (default) or json lines")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between reads (default 2)")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds (exit 3)")
    p.set_defaults(func=cmd_watch)
