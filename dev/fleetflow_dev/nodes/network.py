"""A node's network namespace, its veth to the host, and the routes between them.

Every cluster's node lives in a network namespace of its own (``ff-node<i>``), so its
kube-proxy, its CNI bridge and everything the kubelet writes into iptables stay in there and
never meet another cluster's. Deleting the namespace takes all of that with it; the host keeps
only the veth (which goes with its peer) and the routes over it (which go with the veth).

The host forwards between nodes (a workload pod reaching a service cluster's LoadBalancer
address), so ``net.ipv4.ip_forward`` is turned on while any node exists; the value found before
is remembered in the fleet directory and put back when the last node goes.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

from fleetflow.errors import FleetError
from fleetflow_dev.nodes.addresses import NodeAddresses

NETNS_DIR = Path("/run/netns")
_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
TIMEOUT = 30.0


def _run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise FleetError(f"'{' '.join(argv)}' did not finish within {TIMEOUT:.0f}s") from None
    if check and proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise FleetError(f"'{' '.join(argv)}' failed: {last}")
    return proc


def in_netns(addresses: NodeAddresses, argv: list[str]) -> list[str]:
    """``argv`` run inside the node's network namespace (only the network: the mount namespace
    stays the host's, so the kubelet's volume mounts are the ones containerd sees)."""
    nsenter = shutil.which("nsenter") or "/usr/bin/nsenter"  # posix_spawn needs a path
    return [nsenter, f"--net={NETNS_DIR / addresses.netns}", "--", *argv]


def exists(addresses: NodeAddresses) -> bool:
    return (NETNS_DIR / addresses.netns).exists()


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def setup(addresses: NodeAddresses, state_dir: Path) -> None:
    """Create (or complete) the namespace, the veth pair, their addresses and the routes.
    Idempotent: every step checks or replaces."""
    a = addresses
    if not exists(a):
        _run(["ip", "netns", "add", a.netns])
    if not link_exists(a.host_link):
        _run(
            ["ip", "link", "add", a.host_link, "type", "veth", "peer", "name", a.node_link, "netns", a.netns]
        )
    _run(["ip", "addr", "replace", f"{a.host_ip}/24", "dev", a.host_link])
    _run(["ip", "link", "set", a.host_link, "up"])
    ns = ["ip", "-n", a.netns]
    _run([*ns, "addr", "replace", f"{a.node_ip}/24", "dev", a.node_link])
    _run([*ns, "link", "set", a.node_link, "up"])
    _run([*ns, "link", "set", "lo", "up"])
    # The node reaches the host and other nodes' LoadBalancer addresses; nothing else.
    for fleet_range in ("172.30.0.0/16", "172.31.0.0/16"):
        _run([*ns, "route", "replace", fleet_range, "via", a.host_ip])
    # The host reaches this node's pods, Services and LoadBalancer addresses.
    for node_range in (a.pod_cidr, a.service_cidr, a.loadbalancer_cidr):
        _run(["ip", "route", "replace", node_range, "via", a.node_ip, "dev", a.host_link])
    for key, value in (
        ("net.ipv4.ip_forward", "1"),
        ("net.bridge.bridge-nf-call-iptables", "1"),
        ("net.ipv4.conf.all.route_localnet", "1"),
    ):
        _run(in_netns(a, ["sysctl", "-q", "-w", f"{key}={value}"]), check=False)
    _enable_forwarding(state_dir)


def teardown(addresses: NodeAddresses) -> None:
    """Delete the namespace (its links, iptables chains and routes go with it) and the host's
    side of the veth (with the routes over it). Missing pieces are fine."""
    if link_exists(addresses.host_link):
        _run(["ip", "link", "del", addresses.host_link], check=False)
    if exists(addresses):
        _run(["ip", "netns", "del", addresses.netns], check=False)


def used_indexes() -> set[int]:
    """Node indexes whose host link exists on this machine (any fleet's)."""
    found = set()
    for path in Path("/sys/class/net").glob("ffh*"):
        with contextlib.suppress(ValueError):
            found.add(int(path.name[3:]))
    return found


def _enable_forwarding(state_dir: Path) -> None:
    saved = state_dir / "ip_forward.before"
    current = _FORWARD.read_text().strip()
    if not saved.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(current + "\n")
    if current != "1":
        _FORWARD.write_text("1\n")


def restore_forwarding(state_dir: Path) -> None:
    """Put back the host's ``ip_forward`` as it was before the first node (when no node is left)."""
    saved = state_dir / "ip_forward.before"
    if not saved.exists() or used_indexes():
        return
    _FORWARD.write_text(saved.read_text())
    saved.unlink()
