"""`twlegal-dev cluster up|down|status|load`: a local control plane (and node) in the background, like
`kind create cluster`."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from twlegal import yamlio
from twlegal.api.crd import custom_resource_definition

from . import binaries


def _plane(name: str, *, node: bool = False):
    from .controlplane import ControlPlane  # needs the `dev` extra (cryptography): only for these commands

    return ControlPlane(binaries.cache_dir() / "clusters" / name, node=node)


def _node(plane):
    from .node import Node

    return Node(plane.state_dir / "node", plane)


def kubectl_path() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.exists() else (shutil.which("kubectl") or "kubectl")


def up(args: argparse.Namespace) -> int:
    if args.node:
        from .node import missing_host_tools

        missing = missing_host_tools()
        if missing:
            print(
                f"--node needs {', '.join(missing)} (Debian: apt-get install runc iptables iproute2 util-linux)",
                file=sys.stderr,
            )
            return 2
    plane = _plane(args.name, node=args.node)
    running = {**plane.running(), **(_node(plane).running() if args.node else {})}
    if running and all(running.values()) and (not args.node or "kubelet" in running):
        print(plane.kubeconfig)
        print(f"cluster {args.name} is already running", file=sys.stderr)
        return 0
    if running:
        _stop(plane)
    print(
        f"starting cluster {args.name} (etcd, kube-apiserver, kube-controller-manager, kube-scheduler "
        f"{binaries.K8S_VERSION}{', and a node: containerd, kubelet, kube-proxy' if args.node else ''}) ...",
        file=sys.stderr,
    )
    plane.start(detach=True)
    if args.node:
        from .node import NetworkInUse

        try:
            _node(plane).start(detach=True)
        except NetworkInUse as exc:
            _stop(plane)
            print(f"cluster {args.name}: {exc}", file=sys.stderr)
            return 1
        except Exception:
            _stop(plane)
            raise
    if not args.no_crd:
        subprocess.run(
            [
                kubectl_path(),
                "--kubeconfig",
                str(plane.kubeconfig),
                "apply",
                "--server-side",
                "--field-manager=twlegal-dev",
                "-f",
                "-",
            ],
            input=yamlio.dump(custom_resource_definition()),
            text=True,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    print(f"ready; use it with: export KUBECONFIG={plane.kubeconfig}", file=sys.stderr)
    print(plane.kubeconfig)
    return 0


def _stop(plane) -> None:
    node = _node(plane)
    if node.state_dir.exists():  # also a node whose start failed before it recorded a process
        node.stop()
    plane.stop()


def down(args: argparse.Namespace) -> int:
    plane = _plane(args.name)
    if not plane.running() and not _node(plane).running():
        if args.delete:
            shutil.rmtree(plane.state_dir, ignore_errors=True)
        print(f"cluster {args.name} is not running", file=sys.stderr)
        return 0
    with_node = " --node" if _node(plane).state_dir.exists() else ""
    _stop(plane)
    if args.delete:
        shutil.rmtree(plane.state_dir, ignore_errors=True)
        print(f"cluster {args.name} stopped and deleted", file=sys.stderr)
    else:
        print(
            f"cluster {args.name} stopped; `twlegal-dev cluster up{with_node} --name {args.name}` starts it "
            "again (same ports, ranges and data)",
            file=sys.stderr,
        )
    return 0


def status(args: argparse.Namespace) -> int:
    from . import network

    plane = _plane(args.name)
    running = {**plane.running(), **_node(plane).running()}
    if not running:
        print(f"cluster {args.name}: not running")
        return 1
    for component, alive in running.items():
        print(f"{component:26} {'running' if alive else 'stopped'}")
    print(f"kubeconfig                 {plane.kubeconfig}")
    print(f"logs                       {plane.logs}")
    net = network.load(plane.state_dir)
    if net is not None:
        print(f"services                   {net.service_cidr} (kubernetes: {net.kubernetes_service_ip})")
        if "kubelet" in running:
            print(f"pods                       {net.pod_cidr}")
            print(
                f"node                       {net.node_ip} in network namespace {net.netns}, "
                f"cgroups under {net.cgroup_root}"
            )
    return 0 if all(running.values()) else 1


def load(args: argparse.Namespace) -> int:
    """Docker images into the node's containerd, as `kind load docker-image` does for kind."""
    plane = _plane(args.name)
    node = _node(plane)
    if not node.running().get("containerd"):
        print(f"cluster {args.name} has no node running: twlegal-dev cluster up --node", file=sys.stderr)
        return 1
    imported = node.load_docker_images(args.images, docker=args.docker)
    for image in args.images:
        print(f"{image}: {'imported' if image in imported else 'already there'}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twlegal-dev", description="twlegal's developer tools")
    dev_sub = parser.add_subparsers(dest="dev_command", required=True)
    cluster = dev_sub.add_parser("cluster", help="a local Kubernetes control plane built from upstream sources")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True)
    for name, func, helptext in (
        ("up", up, "start it in the background and print the kubeconfig path"),
        ("down", down, "stop it"),
        ("status", status, "say what runs"),
    ):
        p = cluster_sub.add_parser(name, help=helptext)
        p.add_argument("--name", default="twlegal", help="cluster name (state in ~/.cache/twlegal/clusters/NAME)")
        if name == "up":
            p.add_argument("--no-crd", action="store_true", help="do not install the LegalModelRelease CRD")
            p.add_argument(
                "--node",
                action="store_true",
                help="also run a real node (containerd, kubelet, kube-proxy; needs root, runc, iptables)",
            )
        if name == "down":
            p.add_argument("--delete", action="store_true", help="also delete its state (etcd data, PKI)")
        p.set_defaults(func=func)
    p = cluster_sub.add_parser("load", help="import Docker images into the node (like `kind load docker-image`)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--name", default="twlegal", help="cluster name")
    p.add_argument("--docker", default=shutil.which("docker") or "docker", help="the Docker client to read from")
    p.set_defaults(func=load)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
