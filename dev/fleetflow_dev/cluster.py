"""One local cluster: its own etcd, kube-apiserver and kube-controller-manager.

The flags follow controller-runtime's envtest (TLS, client-certificate auth, RBAC), plus a
kube-controller-manager so that namespaces really finish deleting and garbage collection runs.
Without a node (``fleetflow_dev.nodes``) nothing runs Pods: they and Jobs are stored, never executed.
With one, the API server listens on the host side of the node's veth and serves in-cluster
clients (ServiceAccount admission, the ``kubernetes`` Service's endpoints, the kubelet's API).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import psutil

from fleetflow.errors import FleetError
from fleetflow.supervisor import processes, readiness
from fleetflow_dev import kubeconfig, pki
from fleetflow_dev.binaries import Binaries
from fleetflow_dev.nodes.addresses import NodeAddresses
from fleetflow_dev.state import PROCESSES, ClusterRecord


@dataclass(frozen=True)
class ClusterPaths:
    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def kcm_kubeconfig(self) -> Path:
        return self.root / "controller-manager.kubeconfig"

    def log(self, process: str) -> Path:
        return self.root / "logs" / f"{process}.log"

    @property
    def marker(self) -> str:
        """A string every one of this cluster's processes has on its command line."""
        return str(self.root)


def health(record: ClusterRecord, paths: ClusterPaths) -> dict[str, bool]:
    """Which of the cluster's processes are running (and are ours)."""
    return {p: processes.is_ours(record.pids.get(p), paths.marker) for p in PROCESSES}


def api_ready(record: ClusterRecord, paths: ClusterPaths) -> tuple[bool, str]:
    keys = pki.ClusterPKI(paths.pki)
    if not record.api_port or not keys.complete():
        return False, "never started"
    context = readiness.tls_context(keys.serving_ca, keys.admin_cert, keys.admin_key)
    return readiness.probe(f"{record.server}/readyz", context)


def stop(record: ClusterRecord, paths: ClusterPaths) -> None:
    """Stop the cluster's processes, newest first; data and certificates stay."""
    for process in reversed(PROCESSES):
        pid = record.pids.pop(process, None)
        if pid:
            processes.stop(pid, paths.marker)


def _choose_ports(record: ClusterRecord) -> list[str]:
    """Keep the previous ports when free (kubeconfigs stay valid); otherwise take new ones."""
    notes = []
    for attr in ("etcd_port", "etcd_peer_port", "api_port"):
        port = getattr(record, attr)
        if not port or processes.port_in_use(port):
            if port:
                notes.append(f"port {port} is taken")
            setattr(record, attr, processes.free_port())
    return notes


def _start_apiserver(
    record: ClusterRecord, paths: ClusterPaths, binaries: Binaries, keys: pki.ClusterPKI
) -> ssl.SSLContext:
    """Launch kube-apiserver on the record's port against its etcd; wait until it is ready.
    Returns the admin TLS context for further probes."""
    record.pids["kube-apiserver"] = processes.start(
        [
            str(binaries["kube-apiserver"]),
            "--secure-port",
            str(record.api_port),
            "--bind-address",
            record.address,
            "--advertise-address",
            record.address,
            "--cert-dir",
            str(paths.pki),
            "--tls-cert-file",
            str(keys.serving_cert),
            "--tls-private-key-file",
            str(keys.serving_key),
            "--client-ca-file",
            str(keys.client_ca),
            "--etcd-servers",
            f"http://127.0.0.1:{record.etcd_port}",
            "--allow-privileged=true",
            "--authorization-mode",
            "RBAC",
            "--service-account-issuer",
            f"{record.server}",
            "--service-account-key-file",
            str(keys.sa_pub),
            "--service-account-signing-key-file",
            str(keys.sa_key),
            *_apiserver_mode_flags(record, keys),
        ],
        paths.log("kube-apiserver"),
    )
    pid = record.pids["kube-apiserver"]
    context = readiness.tls_context(keys.serving_ca, keys.admin_cert, keys.admin_key)
    readiness.wait_healthy(
        f"{record.name}: kube-apiserver",
        f"{record.server}/readyz",
        lambda: processes.child_running(pid),
        paths.log("kube-apiserver"),
        context,
    )
    return context


def _apiserver_mode_flags(record: ClusterRecord, keys: pki.ClusterPKI) -> list[str]:
    """Without a node: nothing runs Pods, so no ServiceAccount admission and no endpoints for the
    ``kubernetes`` Service. With a node: what in-cluster clients and ``kubectl logs`` need, and
    the API server reaches webhooks at their pods' addresses (it is outside every pod network)."""
    if not record.node_index:
        return [
            "--service-cluster-ip-range",
            "10.0.0.0/16",  # room for thousands of Services (a /24 is full at about 120 databases)
            "--disable-admission-plugins",
            "ServiceAccount",
            "--endpoint-reconciler-type",
            "none",
        ]
    addresses = NodeAddresses(record.node_index)
    return [
        "--service-cluster-ip-range",
        addresses.service_cidr,
        "--enable-aggregator-routing=true",
        "--kubelet-client-certificate",
        str(keys.admin_cert),
        "--kubelet-client-key",
        str(keys.admin_key),
        "--kubelet-preferred-address-types",
        "InternalIP",
    ]


def node_sans(record: ClusterRecord) -> tuple[str, ...]:
    if not record.node_index:
        return ()
    addresses = NodeAddresses(record.node_index)
    return (addresses.host_ip, addresses.kubernetes_service_ip)


def kill_apiserver(record: ClusterRecord, paths: ClusterPaths) -> int:
    """SIGKILL the cluster's kube-apiserver (a crash, for fault tests) and wait until it is gone;
    etcd, the controller manager, data and port are left as they are. Returns the killed pid.

    Only the pid recorded for this cluster, and only if its command line is still this
    cluster's: never a process the fleet did not start."""
    pid = record.pids.get("kube-apiserver", 0)
    if not processes.is_ours(pid, paths.marker):
        raise FleetError(f"{record.name}: kube-apiserver is not running; nothing to kill")
    process = psutil.Process(pid)
    process.kill()
    process.wait(timeout=30)  # reaps it when it is our child
    record.pids.pop("kube-apiserver", None)
    return pid


def restart_apiserver(record: ClusterRecord, paths: ClusterPaths, binaries: Binaries) -> None:
    """Start a killed kube-apiserver again on the same port, over the same etcd (same data): a
    restart that clients, registered kubeconfigs included, see as one server coming back."""
    if processes.is_ours(record.pids.get("kube-apiserver"), paths.marker):
        raise FleetError(f"{record.name}: kube-apiserver is already running")
    if not processes.is_ours(record.pids.get("etcd"), paths.marker):
        raise FleetError(f"{record.name}: etcd is not running; use 'fleetflow fleet up' to restart it all")
    if processes.port_in_use(record.api_port):
        raise FleetError(f"{record.name}: port {record.api_port} is taken; cannot restart on the same port")
    try:
        _start_apiserver(record, paths, binaries, pki.ClusterPKI(paths.pki))
    except FleetError:
        if pid := record.pids.pop("kube-apiserver", None):
            processes.stop(pid, paths.marker)
        raise


def start(record: ClusterRecord, paths: ClusterPaths, binaries: Binaries) -> list[str]:
    """Start etcd, kube-apiserver and kube-controller-manager; return notes for the user."""
    notes = _choose_ports(record)
    keys = pki.ensure(paths.pki, record.name, node_sans(record))
    paths.etcd_data.mkdir(parents=True, exist_ok=True, mode=0o700)

    def launch(process: str, argv: list[str]) -> None:
        record.pids[process] = processes.start(argv, paths.log(process))

    def alive(process: str) -> bool:
        return processes.child_running(record.pids[process])

    try:
        etcd_url = f"http://127.0.0.1:{record.etcd_port}"
        peer_url = f"http://127.0.0.1:{record.etcd_peer_port}"
        launch(
            "etcd",
            [
                str(binaries["etcd"]),
                "--name",
                record.name,
                "--data-dir",
                str(paths.etcd_data),
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"{record.name}={peer_url}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        readiness.wait_healthy(
            f"{record.name}: etcd", f"{etcd_url}/health", lambda: alive("etcd"), paths.log("etcd")
        )
        context = _start_apiserver(record, paths, binaries, keys)
        kubeconfig.write(
            paths.kcm_kubeconfig,
            [kubeconfig.Entry(record.name, record.server, keys.serving_ca, keys.admin_cert, keys.admin_key)],
        )
        launch(
            "kube-controller-manager",
            [
                str(binaries["kube-controller-manager"]),
                "--kubeconfig",
                str(paths.kcm_kubeconfig),
                "--secure-port",
                "0",
                "--leader-elect=false",
                "--cluster-name",
                record.name,
                "--service-account-private-key-file",
                str(keys.sa_key),
                "--root-ca-file",
                str(keys.serving_ca),
                "--cluster-signing-cert-file",
                str(keys.client_ca),
                "--cluster-signing-key-file",
                str(keys.client_ca_key),
                f"--use-service-account-credentials={'true' if record.node_index else 'false'}",
            ],
        )
        # The controller manager has no endpoint of its own here; its first visible work is
        # the `default` ServiceAccount in the `default` namespace.
        readiness.wait_healthy(
            f"{record.name}: kube-controller-manager",
            f"{record.server}/api/v1/namespaces/default/serviceaccounts/default",
            lambda: alive("kube-controller-manager"),
            paths.log("kube-controller-manager"),
            context,
        )
    except FleetError:
        stop(record, paths)
        raise
    return notes
