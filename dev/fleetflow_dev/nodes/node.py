"""Start and stop one cluster's node: containerd, kubelet, kube-proxy and CoreDNS in its namespace.

The control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) runs on the
host; the node's processes run in the node's network namespace, entered with ``nsenter --net``
only, so they share the host's mount namespace (the kubelet's secret and projected volumes are
mounts containerd must see). The fleet's images are imported into the node's own containerd
once; a warm start finds them there.

Stopping is the reverse, and leaves nothing behind on the host: the kubelet first (so it does
not restart what is being stopped), every container through containerd (runc removes its
cgroups), then containerd, then every mount under the node's directories (container root file
systems, pod network namespaces, volumes), then the network namespace, which takes the node's
iptables chains, bridge and pod veths with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from fleetflow.errors import FleetError
from fleetflow.supervisor import processes, readiness
from fleetflow_dev import kubeconfig
from fleetflow_dev.mounts import unmount_under
from fleetflow_dev.nodes import config, network
from fleetflow_dev.nodes.addresses import NodeAddresses
from fleetflow_dev.nodes.config import NodePaths

# In start order; stopped in reverse. kube-scheduler is the control plane's, on the host.
NODE_PROCESSES = ("kube-scheduler", "containerd", "kubelet", "kube-proxy", "coredns")
CTR_TIMEOUT = 120.0
CRI_READY = "Start streaming server"  # containerd's CRI plugin, once initialised (Debian's 1.6)

Progress = Callable[[str], None]


def ctr(paths: NodePaths, *args: str, timeout: float = CTR_TIMEOUT) -> str:
    argv = ["ctr", "--address", str(paths.containerd_socket), "--namespace", "k8s.io", *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise FleetError(f"'ctr {' '.join(args[:2])}' did not finish within {timeout:.0f}s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise FleetError(f"'ctr {' '.join(args[:2])}' failed: {last}")
    return proc.stdout


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def images_present(paths: NodePaths) -> set[str]:
    return set(ctr(paths, "images", "list", "--quiet").split())


def get_json(url: str, context: ssl.SSLContext, timeout: float = 5.0) -> dict[str, object] | None:
    """GET ``url``; the JSON body, or None when it does not answer 200 (yet)."""
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:  # noqa: S310
            body: dict[str, object] = json.loads(response.read())
            return body
    except (OSError, ValueError):
        return None


def node_ready(server: str, name: str, context: ssl.SSLContext) -> bool:
    node = get_json(f"{server}/api/v1/nodes/{name}", context)
    conditions = (node or {}).get("status", {}) if isinstance(node, dict) else {}
    for condition in conditions.get("conditions", []) if isinstance(conditions, dict) else []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


class Node:
    """One cluster's node. ``pids`` is the cluster record's pid table, shared and updated in place."""

    def __init__(
        self,
        name: str,
        addresses: NodeAddresses,
        cluster_root: Path,
        pids: dict[str, int],
        binaries: Mapping[str, Path],
    ) -> None:
        self.name = name
        self.addresses = addresses
        self.paths = NodePaths(cluster_root / "node")
        self.marker = str(cluster_root)
        self.pids = pids
        self.binaries = binaries
        self.logs = cluster_root / "logs"

    def log(self, process: str) -> Path:
        return self.logs / f"{process}.log"

    def _launch(self, process: str, argv: list[str], *, netns: bool = True) -> None:
        command = network.in_netns(self.addresses, argv) if netns else argv
        self.pids[process] = processes.start(command, self.log(process))

    def _alive(self, process: str) -> Callable[[], bool]:
        return lambda: processes.child_running(self.pids.get(process, 0))

    def running(self) -> dict[str, bool]:
        return {p: processes.is_ours(self.pids.get(p), self.marker) for p in NODE_PROCESSES}

    def start(
        self,
        server: str,
        keys_ca: Path,
        admin: tuple[Path, Path],
        client_ca: Path,
        images: Mapping[str, Path],
        progress: Progress,
    ) -> None:
        """Start the scheduler and the node, import missing images, and wait for the Node Ready."""
        kubeconfig.write(
            self.paths.kubeconfig, [kubeconfig.Entry(self.name, server, keys_ca, admin[0], admin[1])]
        )
        config.write_all(self.addresses, self.paths, self.name, client_ca)
        self._launch(
            "kube-scheduler",
            [
                str(self.binaries["kube-scheduler"]),
                "--kubeconfig",
                str(self.paths.kubeconfig),
                "--leader-elect=false",
                "--secure-port=0",
            ],
            netns=False,
        )
        self._start_containerd()
        self._import_missing(images, progress)
        self._start_kubelet()
        self._launch(
            "kube-proxy", [str(self.binaries["kube-proxy"]), "--config", str(self.paths.kube_proxy_config)]
        )
        self._launch("coredns", [str(self.binaries["coredns"]), "-conf", str(self.paths.corefile)])
        context = readiness.tls_context(keys_ca, *admin)
        readiness.wait_until(
            f"{self.name}: node Ready",
            lambda: node_ready(server, self.name, context),
            self._alive("kubelet"),
            self.log("kubelet"),
            timeout=120,
        )

    def _start_containerd(self) -> None:
        """Start containerd and wait until its CRI plugin serves: containerd answers ``ctr``
        before the CRI has recovered its containers, and a kubelet started meanwhile exits at once
        ("validate CRI v1 runtime API ... server is not initialized yet"). The CRI logs
        :data:`CRI_READY` once it is initialised."""
        log = self.log("containerd")
        offset = log.stat().st_size if log.exists() else 0
        containerd = shutil.which("containerd") or "/usr/bin/containerd"
        self._launch("containerd", [containerd, "--config", str(self.paths.containerd_config)])
        readiness.wait_until(
            f"{self.name}: containerd's CRI",
            lambda: CRI_READY in _read_from(log, offset) and self._containerd_answers(),
            self._alive("containerd"),
            log,
            timeout=60,
        )

    def _start_kubelet(self) -> None:
        self._launch(
            "kubelet",
            [
                str(self.binaries["kubelet"]),
                "--config",
                str(self.paths.kubelet_config),
                "--kubeconfig",
                str(self.paths.kubeconfig),
                "--root-dir",
                str(self.paths.kubelet_dir),
                "--cert-dir",
                str(self.paths.kubelet_dir / "pki"),
                "--hostname-override",
                self.name,
                "--node-ip",
                self.addresses.node_ip,
                "--v=1",
            ],
        )

    def restart_runtime(self) -> None:
        """Restart the kubelet and containerd (a node's upgrade or crash, for fault tests): both
        stop, containerd starts again, then the kubelet. Running containers keep running under
        their shims meanwhile, as on a real node."""
        for process in ("kubelet", "containerd"):
            if pid := self.pids.pop(process, None):
                processes.stop(pid, self.marker)
        self._start_containerd()
        self._start_kubelet()

    def _containerd_answers(self) -> bool:
        if not self.paths.containerd_socket.exists():
            return False
        try:
            ctr(self.paths, "version", timeout=5)
        except FleetError:
            return False
        return True

    def _import_missing(self, images: Mapping[str, Path], progress: Progress) -> None:
        from fleetflow_dev.images import import_image

        present = images_present(self.paths)
        for reference, tarball in images.items():
            if reference in present:
                continue
            started = time.monotonic()
            import_image(tarball, str(self.paths.containerd_socket))
            progress(f"{self.name}: imported {reference} ({time.monotonic() - started:.1f}s)")

    def load_image(self, tarball: Path) -> list[str]:
        from fleetflow_dev.images import import_image

        return import_image(tarball, str(self.paths.containerd_socket))

    def stop(self) -> None:
        """Stop the node and clean up after it; the cluster's data (etcd, volumes) stays."""
        for process in ("kubelet", "kube-proxy", "coredns"):
            if pid := self.pids.pop(process, None):
                processes.stop(pid, self.marker)
        if processes.is_ours(self.pids.get("containerd"), self.marker) and self._containerd_answers():
            self._remove_containers()
        for process in ("containerd", "kube-scheduler"):
            if pid := self.pids.pop(process, None):
                processes.stop(pid, self.marker)
        self._kill_leftover_shims()
        unmount_under(self.paths.root, self.paths.runtime, self.paths.kubelet_state)
        # Sockets, and the kubelet's directory of pods that are gone.
        for directory, parent in (
            (self.paths.runtime, config.RUNTIME_DIR),
            (self.paths.kubelet_state, config.KUBELET_ROOT),
        ):
            shutil.rmtree(directory, ignore_errors=True)
            with contextlib.suppress(OSError):
                parent.rmdir()  # when no other node is left

    def _remove_containers(self) -> None:
        """Every container and task of the node, through containerd (runc removes their cgroups)."""
        for container in ctr(self.paths, "containers", "list", "--quiet").split():
            # A container without a task (never started, or gone already) fails the first two.
            with contextlib.suppress(FleetError):
                ctr(self.paths, "tasks", "kill", "--all", "--signal", "SIGKILL", container, timeout=15)
            with contextlib.suppress(FleetError):
                ctr(self.paths, "tasks", "delete", "--force", container, timeout=30)
            with contextlib.suppress(FleetError):
                ctr(self.paths, "containers", "delete", container, timeout=30)

    def _kill_leftover_shims(self) -> None:
        """Shims of this node's containerd that outlived it (containerd was killed)."""
        import psutil

        socket = str(self.paths.containerd_socket)
        for process in psutil.process_iter(["name", "cmdline"]):
            try:
                if process.info["name"] == "containerd-shim-runc-v2" and socket in " ".join(
                    process.info["cmdline"] or []
                ):
                    for child in process.children(recursive=True):
                        child.kill()
                    process.kill()
            except psutil.Error:
                continue


def ensure_runtime_tools() -> None:
    """One line naming what is missing of the runtime that nodes need from Debian's packages."""
    missing = [
        tool for tool in ("containerd", "runc", "ctr", "nsenter", "ip", "iptables") if not _which(tool)
    ]
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("containernetworking-plugins")
    if missing:
        raise FleetError(
            f"nodes need {', '.join(missing)}: run scripts/install-node-runtime (as root), or "
            "'apt-get install containerd runc containernetworking-plugins iproute2 iptables'"
        )
    if os.geteuid() != 0:
        raise FleetError("nodes need root (network namespaces, mounts, iptables): run as root")


def _which(tool: str) -> bool:
    return shutil.which(tool) is not None
