"""The local fleet as a whole: ``up``, ``status`` and ``down`` over several local clusters.

``up`` is idempotent: a cluster whose processes all run and whose API answers is left alone.
A stale cluster (some processes gone, pids that belong to somebody else, ports taken) is
stopped, reported in one line and started again with its data and certificates kept.
Clusters start in parallel; the kubeconfig is rewritten once at the end with every cluster.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fleetflow import config
from fleetflow.errors import FleetError, UsageError
from fleetflow.labels import validate_dns_label
from fleetflow.supervisor import processes, readiness
from fleetflow_dev import cluster, kubeconfig, pki
from fleetflow_dev.binaries import Binaries
from fleetflow_dev.nodes import network, node
from fleetflow_dev.nodes.addresses import MAX_INDEX, NodeAddresses
from fleetflow_dev.state import ClusterRecord, FleetState

DEFAULT_CLUSTERS = ("mgmt", "service-cluster", "workload-cluster")
POSTGRES_IMAGE = "docker.io/fleetflow/postgresql:15"  # CloudNativePG's instances and the app Job's psql

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ClusterStatus:
    name: str
    state: str  # Running, Stopped, Degraded
    endpoint: str
    detail: str


def validate_names(names: Iterable[str]) -> list[str]:
    result: list[str] = []
    for name in names:
        validate_dns_label(name, "cluster name")
        if name not in result:
            result.append(name)
    if not result:
        raise UsageError("no cluster names given")
    return result


class Fleet:
    """The local fleet rooted at ``$FLEETFLOW_HOME/fleet``."""

    def __init__(self, home: Path | None = None) -> None:
        self.root = home / "fleet" if home else config.fleet_dir()
        self.state_path = self.root / "state.json"
        self.kubeconfig_path = self.root / config.fleet_kubeconfig().name

    def paths(self, name: str) -> cluster.ClusterPaths:
        return cluster.ClusterPaths(self.root / "clusters" / name)

    def up(
        self,
        names: Iterable[str],
        binaries: Binaries,
        progress: Progress,
        *,
        standin: bool = True,
        nodes: bool = False,
    ) -> FleetState:
        """Start the clusters; with ``nodes`` each with a real node (and the real CloudNativePG
        operator's chart recorded, unless ``standin``); with ``standin`` the local CloudNativePG
        stand-in controller."""
        wanted = validate_names(names)
        state = FleetState.load(self.state_path)
        records = [state.clusters.setdefault(n, ClusterRecord(n)) for n in wanted]
        images: dict[str, Path] = {}
        if nodes:
            node.ensure_runtime_tools()
            self._assign_node_indexes(state, records)
            from fleetflow_dev.images import ensure_images

            images = ensure_images(progress)
        errors: list[str] = []
        try:
            with ThreadPoolExecutor(max_workers=len(records)) as pool:
                futures = [pool.submit(self._up_one, r, binaries, images, progress) for r in records]
                for future in futures:
                    try:
                        future.result()
                    except FleetError as exc:
                        errors.append(str(exc))
        finally:
            state.save(self.state_path)
            self._write_kubeconfig(state, current=wanted[0])
        if errors:
            raise FleetError("; ".join(errors))
        if any(r.node_index for r in state.clusters.values()):
            self._ensure_controllers(state, progress)
        if standin:
            self._ensure_standin(state, progress)
        self._record(binaries, real_operator=nodes and not standin)
        return state

    def has_nodes(self) -> bool:
        return any(r.node_index for r in FleetState.load(self.state_path).clusters.values())

    def _assign_node_indexes(self, state: FleetState, records: list[ClusterRecord]) -> None:
        """Give each new cluster a node index free on this machine; refuse to add a node to a
        cluster created without one (its Service range and certificates were made for none)."""
        for record in records:
            if record.node_index:
                continue
            if record.api_port:
                raise UsageError(
                    f"cluster {record.name} was created without a node; nodes change its Service "
                    "range. Use another FLEETFLOW_HOME, or 'fleetflow fleet down' and remove "
                    f"{self.paths(record.name).root}"
                )
            taken = network.used_indexes() | {r.node_index for r in state.clusters.values()}
            free = [i for i in range(1, MAX_INDEX + 1) if i not in taken]
            if not free:
                raise FleetError(f"no free node index: this machine already runs {MAX_INDEX} fleet nodes")
            record.node_index = free[0]

    def _record(self, binaries: Binaries | None, *, real_operator: bool = False) -> None:
        """Tell the product, through fleetflow's settings in this home, where the helm we built
        and the CloudNativePG chart are (the real operator's with nodes, else the stand-in's);
        ``None`` (on ``down``) forgets the chart."""
        from fleetflow_dev.cnpg import operator_chart
        from fleetflow_dev.cnpg.chart_build import chart_dir

        home = self.root.parent
        if binaries is None:
            config.save_setting(config.OPERATOR_CHART, None, home=home)
            config.save_setting(config.APP_IMAGE, None, home=home)
            return
        config.save_setting(config.APP_IMAGE, POSTGRES_IMAGE if self.has_nodes() else None, home=home)
        chart = operator_chart.chart_dir() if real_operator else chart_dir()
        config.save_setting(config.OPERATOR_CHART, str(chart), home=home)
        if "helm" in binaries.paths:
            config.save_setting(config.HELM, str(binaries["helm"]), home=home)

    @property
    def standin_root(self) -> Path:
        """Where the stand-in keeps one PostgreSQL server per CNPG Cluster."""
        return self.root / "cnpg"

    def _standin_log(self) -> Path:
        return self.root / "logs" / "cnpg-standin.log"

    def _ensure_standin(self, state: FleetState, progress: Progress) -> None:
        """The stand-in for the CloudNativePG operator (no kubelet runs Pods here), as a process."""
        marker = str(self.kubeconfig_path)
        if processes.is_ours(state.standin_pid, marker):
            return
        argv = [
            sys.executable,
            "-m",
            "fleetflow_dev.cli",
            "cnpg-standin",
            "--kubeconfig",
            marker,
            "--clusters",
            ",".join(sorted(state.clusters)),
            "--root",
            str(self.standin_root),
        ]
        log = self._standin_log()
        offset = log.stat().st_size if log.exists() else 0
        state.standin_pid = processes.start(argv, log)
        state.save(self.state_path)

        def serving() -> bool:
            return log.exists() and "cnpg stand-in: serving" in log.read_text(errors="replace")[offset:]

        readiness.wait_until(
            "CloudNativePG stand-in controller",
            serving,
            lambda: processes.child_running(state.standin_pid),
            log,
            timeout=60,
        )
        progress(
            f"CloudNativePG stand-in controller started (pid {state.standin_pid}, log {self._standin_log()})"
        )

    def node_of(self, record: ClusterRecord, binaries: Binaries | None = None) -> node.Node:
        return node.Node(
            record.name,
            NodeAddresses(record.node_index),
            self.paths(record.name).root,
            record.pids,
            binaries.paths if binaries else {},
        )

    def _health(self, record: ClusterRecord) -> dict[str, bool]:
        running = cluster.health(record, self.paths(record.name))
        if record.node_index:
            running.update(self.node_of(record).running())
        return running

    def _up_one(
        self, record: ClusterRecord, binaries: Binaries, images: dict[str, Path], progress: Progress
    ) -> None:
        paths = self.paths(record.name)
        running = self._health(record)
        if all(running.values()):
            ready, _ = cluster.api_ready(record, paths)
            if ready:
                progress(f"{record.name}: already running at {record.server}")
                return
        if record.pids:
            gone = [p for p, ok in running.items() if not ok]
            reason = f"{', '.join(gone)} not running" if gone else "API server not answering"
            progress(f"{record.name}: recovering stale state ({reason}); restarting")
            self._stop_one(record)
        if record.node_index:
            network.setup(NodeAddresses(record.node_index), self.root)
        notes = cluster.start(record, paths, binaries)
        for note in notes:
            progress(f"{record.name}: {note}; using a new port")
        if record.node_index:
            keys = pki.ClusterPKI(paths.pki)
            try:
                self.node_of(record, binaries).start(
                    record.server,
                    keys.serving_ca,
                    (keys.admin_cert, keys.admin_key),
                    keys.client_ca,
                    images,
                    progress,
                )
            except FleetError:
                self._stop_one(record)
                raise
            progress(f"{record.name}: ready at {record.server}, node Ready")
            return
        progress(f"{record.name}: ready at {record.server}")

    def _stop_one(self, record: ClusterRecord) -> None:
        if record.node_index:
            self.node_of(record).stop()
        cluster.stop(record, self.paths(record.name))
        if record.node_index:
            network.teardown(NodeAddresses(record.node_index))

    def load_image(self, tarball: Path, progress: Progress) -> list[str]:
        """Import an OCI archive into every running node; returns the references imported."""
        state = FleetState.load(self.state_path)
        nodes = [
            r for r in state.clusters.values() if r.node_index and self.node_of(r).running()["containerd"]
        ]
        if not nodes:
            raise UsageError("no node is running: start the fleet with 'fleetflow fleet up --nodes'")
        references: list[str] = []
        for record in sorted(nodes, key=lambda r: r.name):
            references = self.node_of(record).load_image(tarball)
            progress(f"{record.name}: imported {', '.join(references)}")
        return references

    def restart_node_runtime(self, name: str, binaries: Binaries) -> None:
        """Restart cluster ``name``'s kubelet and containerd (fault tests); containers keep running."""
        state = FleetState.load(self.state_path)
        record = self._record_of(state, name)
        if not record.node_index:
            raise UsageError(f"cluster {name} has no node")
        try:
            self.node_of(record, binaries).restart_runtime()
        finally:
            state.save(self.state_path)

    @property
    def controllers_root(self) -> Path:
        """Where the nodes' volume provisioner keeps volumes (one directory per cluster)."""
        return self.root / "volumes"

    def _ensure_controllers(self, state: FleetState, progress: Progress) -> None:
        """The nodes' local-path volume provisioner and LoadBalancer allocator, as one process."""
        marker = str(self.kubeconfig_path)
        if processes.is_ours(state.controllers_pid, marker):
            return
        clusters = ",".join(f"{n}:{r.node_index}" for n, r in sorted(state.clusters.items()) if r.node_index)
        argv = [
            sys.executable,
            "-m",
            "fleetflow_dev.nodes.controllers",
            "--kubeconfig",
            marker,
            "--clusters",
            clusters,
            "--root",
            str(self.controllers_root),
        ]
        log = self.root / "logs" / "node-controllers.log"
        offset = log.stat().st_size if log.exists() else 0
        state.controllers_pid = processes.start(argv, log)
        state.save(self.state_path)
        readiness.wait_until(
            "node controllers (volumes, LoadBalancer addresses)",
            lambda: log.exists() and "node controllers: serving" in log.read_text(errors="replace")[offset:],
            lambda: processes.child_running(state.controllers_pid),
            log,
            timeout=60,
        )
        progress(f"node controllers started (pid {state.controllers_pid}, log {log})")

    def kill_apiserver(self, name: str) -> int:
        """SIGKILL cluster ``name``'s kube-apiserver (fault tests); returns its pid. Everything
        else (etcd, controller manager, data, port) stays for :meth:`restart_apiserver`."""
        state = FleetState.load(self.state_path)
        record = self._record_of(state, name)
        try:
            return cluster.kill_apiserver(record, self.paths(name))
        finally:
            state.save(self.state_path)

    def restart_apiserver(self, name: str, binaries: Binaries) -> None:
        """Start cluster ``name``'s killed kube-apiserver again: same port, same etcd data, so
        every kubeconfig naming it stays valid. Returns once it is ready."""
        state = FleetState.load(self.state_path)
        record = self._record_of(state, name)
        try:
            cluster.restart_apiserver(record, self.paths(name), binaries)
        finally:
            state.save(self.state_path)

    @staticmethod
    def _record_of(state: FleetState, name: str) -> ClusterRecord:
        if name not in state.clusters:
            raise UsageError(f"no cluster {name!r} in the local fleet")
        return state.clusters[name]

    def status(self) -> list[ClusterStatus]:
        state = FleetState.load(self.state_path)
        result = []
        for name, record in sorted(state.clusters.items()):
            paths = self.paths(name)
            running = self._health(record)
            if not any(running.values()):
                result.append(ClusterStatus(name, "Stopped", record.server, "no process running"))
                continue
            ready, detail = cluster.api_ready(record, paths)
            down = [p for p, ok in running.items() if not ok]
            if ready and not down:
                detail = "ready"
                if record.node_index:
                    detail += f", node {NodeAddresses(record.node_index).node_ip}"
                result.append(ClusterStatus(name, "Running", record.server, detail))
            else:
                why = f"{', '.join(down)} not running" if down else f"API not ready: {detail}"
                result.append(ClusterStatus(name, "Degraded", record.server, why))
        return result

    def down(self, progress: Progress) -> None:
        state = FleetState.load(self.state_path)
        if state.standin_pid:
            processes.stop(state.standin_pid, str(self.kubeconfig_path))
            state.standin_pid = 0
            progress("CloudNativePG stand-in controller: stopped")
        from fleetflow_dev.cnpg import stop_servers

        if stopped := stop_servers(self.standin_root):
            progress(f"stopped {stopped} stand-in PostgreSQL server(s); their data stays")
        if state.controllers_pid:
            processes.stop(state.controllers_pid, str(self.kubeconfig_path))
            state.controllers_pid = 0
            progress("node controllers: stopped")
        for name, record in sorted(state.clusters.items()):
            if record.pids or (record.node_index and network.exists(NodeAddresses(record.node_index))):
                self._stop_one(record)
                progress(f"{name}: stopped")
        state.save(self.state_path)
        network.restore_forwarding(self.root)
        self._record(None)

    def _write_kubeconfig(self, state: FleetState, current: str) -> None:
        entries = []
        for name, record in sorted(state.clusters.items()):
            keys = pki.ClusterPKI(self.paths(name).pki)
            if record.api_port and keys.complete():
                entries.append(
                    kubeconfig.Entry(name, record.server, keys.serving_ca, keys.admin_cert, keys.admin_key)
                )
        if entries:
            kubeconfig.write(self.kubeconfig_path, entries, current=current)
