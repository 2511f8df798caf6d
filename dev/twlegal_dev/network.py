"""Which ClusterNetwork each dev cluster gets, and the host plumbing for a node's namespace.

A cluster's network index is chosen once, at its control plane's first start, and kept in the
state directory (network.json) for the cluster's lifetime: the Service range is written into
etcd (the `kubernetes` Service's IP, every ClusterIP) and the certificates, so it cannot change
on a restart. A registry under the cache (networks/INDEX, naming the state directory holding it)
keeps two clusters from picking the same index; an entry whose state directory is gone or names
another index is free again (a deleted cluster, a test's removed temporary directory). The
registry can be lost (another TWLEGAL_CACHE): Node.start then still refuses a namespace in use
by another running node.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from . import binaries
from .node_config import MAX_INDEX, ClusterNetwork, host_rules, netns_setup

NETWORK_FILE = "network.json"
OWNERS = Path("/run/twlegal/netns-owners")


def registry_dir() -> Path:
    return binaries.cache_dir() / "networks"


def load(state_dir: Path) -> ClusterNetwork | None:
    path = state_dir / NETWORK_FILE
    return ClusterNetwork(json.loads(path.read_text())["index"]) if path.exists() else None


@contextlib.contextmanager
def _locked(registry: Path) -> Iterator[None]:
    registry.mkdir(parents=True, exist_ok=True)
    with open(registry / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _holder(registry: Path, index: int) -> Path | None:
    """The state directory that holds `index`, or None if the entry is missing or stale."""
    entry = registry / str(index)
    if not entry.exists():
        return None
    holder = Path(entry.read_text().strip())
    held = load(holder) if holder.is_dir() else None
    return holder if held is not None and held.index == index else None


def allocate(state_dir: Path, registry: Path | None = None) -> ClusterNetwork:
    """This state directory's network: the one it has, else a new index no other cluster holds."""
    registry = registry or registry_dir()
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    with _locked(registry):
        kept = load(state_dir)
        if kept is not None:
            if _holder(registry, kept.index) is None:  # re-record a lost or stale entry
                (registry / str(kept.index)).write_text(str(state_dir))
            return kept
        entries = {int(p.name): Path(p.read_text().strip()) for p in registry.iterdir() if p.name.isdigit()}
        # The index this directory had before its state was wiped (the e2e tier wipes its control
        # plane each run), so its ranges stay the same from run to run.
        index = next((i for i, holder in sorted(entries.items()) if holder == state_dir and i > 0), None)
        if index is None and (state_dir / "etcd").exists():
            index = 0  # made before clusters had networks of their own: its etcd holds 10.0.0.0/24
        if index is None:
            free = [i for i in range(1, MAX_INDEX + 1) if i not in entries or _holder(registry, i) is None]
            if not free:
                raise RuntimeError(
                    f"all {MAX_INDEX} dev cluster networks are taken (see {registry}); "
                    "delete unused clusters: twlegal-dev cluster down --delete --name NAME"
                )
            index = free[0]
        (registry / str(index)).write_text(str(state_dir))
        (state_dir / NETWORK_FILE).write_text(json.dumps({"index": index}))
        return ClusterNetwork(index)


# --- the node's namespace (root) ------------------------------------------------------------------


def _run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc


def netns_pids(net: ClusterNetwork) -> list[int]:
    if not net.netns_path.exists():
        return []
    proc = _run(["ip", "netns", "pids", net.netns], check=False)
    return [int(pid) for pid in proc.stdout.split()]


def owner(net: ClusterNetwork) -> Path | None:
    """The node state directory that made the namespace (recorded beside it under /run)."""
    path = OWNERS / net.netns
    return Path(path.read_text().strip()) if path.exists() else None


def create(net: ClusterNetwork, node_state_dir: Path) -> None:
    # The host forwards the pods' traffic beyond it (DNS, egress); a Docker engine sets this too.
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    if forward.read_text().strip() != "1":
        forward.write_text("1")
    for argv in netns_setup(net):
        _run(argv)
    OWNERS.mkdir(parents=True, exist_ok=True)
    (OWNERS / net.netns).write_text(str(node_state_dir.resolve()))
    set_host_rules(net, present=True)


def set_host_rules(net: ClusterNetwork, *, present: bool) -> None:
    for rule in host_rules(net):
        table, chain_rule = rule[:2], rule[2:]
        exists = _run(["iptables", *table, "-C", *chain_rule], check=False).returncode == 0
        if present and not exists:
            _run(["iptables", *table, "-I", *chain_rule])
        while not present and exists:  # a rule inserted twice by a crashed run: remove every copy
            _run(["iptables", *table, "-D", *chain_rule], check=False)
            exists = _run(["iptables", *table, "-C", *chain_rule], check=False).returncode == 0


def delete(net: ClusterNetwork, timeout: float = 15.0) -> None:
    """Remove the namespace (with it the pods' bridge, kube-proxy's rules and the node's end of the
    link), the host's end of the link (with it the routes) and the host's rules. The processes in
    the namespace must be stopped first: a namespace lives as long as a process is in it."""
    set_host_rules(net, present=False)
    _run(["ip", "netns", "delete", net.netns], check=False)
    _run(["ip", "link", "delete", net.host_veth], check=False)
    (OWNERS / net.netns).unlink(missing_ok=True)
    # The kernel frees a namespace asynchronously; wait, so the next start can reuse the names.
    deadline = time.monotonic() + timeout
    while _link_exists(net.host_veth) and time.monotonic() < deadline:
        time.sleep(0.2)


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def leftovers(net: ClusterNetwork) -> list[str]:
    """What of this network is still on the host (empty once the node is stopped)."""
    found = []
    if net.netns_path.exists():
        found.append(f"network namespace {net.netns}")
    for link in (net.host_veth, net.bridge):
        if _link_exists(link):
            found.append(f"link {link}")
    routes = _run(["ip", "-4", "route", "show"], check=False).stdout
    found += [
        f"route {line}"
        for line in routes.splitlines()
        if line.split()[:1] and line.split()[0] in (net.pod_cidr, net.service_cidr)
    ]
    rules = _run(["iptables-save"], check=False).stdout
    found += [f"iptables {line}" for line in rules.splitlines() if net.rule_comment in line]
    return found


def in_use_message(net: ClusterNetwork, holder: Path | None) -> str:
    """Why a node cannot start: another running node has this network; how to stop that one."""
    where = f"the node with state in {holder}" if holder else "a node this host runs"
    stop = "stop it with the process that started it"
    if holder is not None and holder.name == "node" and (holder.parent / "pids.json").exists():
        stop = f"stop it with: twlegal-dev cluster down --name {holder.parent.name}"
    return (
        f"the dev cluster network {net.netns} (pods {net.pod_cidr}, services {net.service_cidr}) is in use "
        f"by {where} (pids {' '.join(map(str, netns_pids(net)))}); {stop}"
    )
