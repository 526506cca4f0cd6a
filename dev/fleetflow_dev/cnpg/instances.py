"""The stand-in's instances: what the kubelet and CloudNativePG's instance manager do for a Cluster.

On a real cluster two more parts keep a Cluster's PostgreSQL in line, besides the operator:

- **The kubelet restarts a crashed instance.** When the postmaster dies (OOM kill, SIGKILL),
  the container exits and the kubelet starts it again after its restart backoff; meanwhile
  CloudNativePG reports the Cluster not ready: phase "Waiting for the instances to become
  active", ``readyInstances`` 0, condition Ready=False. Credentials are not touched: the
  ``-app`` Secret and the role's password stay what they were. :func:`supervise` does this for
  the stand-in's server of one service cluster: it is woken by the postmaster's exit (a pidfd,
  not a poll), reports every Cluster of the service cluster not ready, holds the server down
  for ``RESTART_BACKOFF`` seconds (reconciles meanwhile wait, as nothing can start a container
  the kubelet holds in back-off), then starts it and has every Cluster reconciled, which
  reports it healthy again.
- **The instance manager applies the ``-app`` Secret's password to the role.** A rotated
  password (a new value written into the Secret, by a user or a secret manager) is set on the
  application user, so the new password works and the old one stops working.
  (CloudNativePG: ``refreshCredentialsFromSecret`` in the instance manager's reconcile of the
  primary, ``internal/management/controller/instance_controller.go``.) :func:`watch_app_secrets`
  watches the ``cnpg.io/userType=app`` Secrets of a service cluster (an informer on the
  process's watch loop, no thread of its own) and has the Cluster a changed one belongs to
  reconciled (which pins the Secret's password on the role, see
  ``databases.Databases.ensure``); after a relist (not the first listing: every Cluster is
  reconciled then anyway), every Cluster with such a Secret is, so a password changed while no
  watch ran is set too. Unlike CloudNativePG, that reconcile also rewrites the
  Secret's derived keys (``uri``, ``pgpass``, ...) to the new password: one more change of the
  Secret, which consumers see as a second rotation with the same password.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from fleetflow.backoff import Backoff
from fleetflow.errors import FleetflowError
from fleetflow.kube import KubeClient
from fleetflow.kube.hub import Watch, hub
from fleetflow.kube.informer import SYNCED, Event, Informer
from fleetflow_dev.cnpg import contract
from fleetflow_dev.cnpg.databases import Databases

log = logging.getLogger("fleetflow.cnpg")

RESTART_BACKOFF = 5.0  # seconds the "kubelet" keeps a crashed server down (its first back-off is 10 s)
IDLE_CHECK = 1.0  # while no server runs (none started yet), how often to look again

Queue = Callable[[str, str], None]  # (namespace, name) of a Cluster to reconcile, forced


def _exited(pid: int, stop: threading.Event) -> bool:
    """Block until process ``pid`` exits (True) or ``stop`` is set (False)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not stop.is_set():
            if poller.poll(int(IDLE_CHECK * 1000)):
                return True
        return False
    finally:
        os.close(fd)


def supervise(
    service_cluster: str,
    databases: Databases,
    client: Callable[[], KubeClient],
    queue: Queue,
    stop: threading.Event,
) -> None:
    """Restart the service cluster's server whenever it dies, as the kubelet would (see the module doc)."""
    while not stop.is_set():
        pid = databases.server.status().pid
        if pid is None:
            stop.wait(IDLE_CHECK)  # no server yet (no Cluster has been reconciled)
            continue
        if not _exited(pid, stop):
            return
        if stop.is_set():
            return
        databases.held.set()
        try:
            log.warning(
                "cnpg stand-in: %s: the PostgreSQL server (pid %d) died; restarting it in %.0fs",
                service_cluster,
                pid,
                RESTART_BACKOFF,
            )
            names = _report_not_ready(service_cluster, client)
            if stop.wait(RESTART_BACKOFF):
                return
        finally:
            databases.held.clear()
        try:
            databases.server.start()
        except FleetflowError as exc:  # the reconciles start it, retrying with backoff
            log.warning("cnpg stand-in: %s: cannot restart the server: %s", service_cluster, exc)
        else:
            log.info("cnpg stand-in: %s: the PostgreSQL server runs again", service_cluster)
        for namespace, name in names:
            queue(namespace, name)


def _report_not_ready(service_cluster: str, client: Callable[[], KubeClient]) -> list[tuple[str, str]]:
    """Every Cluster of the service cluster: not ready while its instance is down."""
    try:
        items, _ = client().list(contract.API_VERSION, contract.KIND)
    except FleetflowError as exc:
        log.warning("cnpg stand-in: %s: cannot list Clusters: %s", service_cluster, exc)
        return []
    for obj in items:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        status = contract.cluster_status(
            meta["name"],
            contract.requested_instances(obj),
            contract.PHASE_WAITING,
            previous=obj.get("status"),
            now=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            reason="the PostgreSQL server died; the instance is being restarted",
        )
        body = {
            "apiVersion": contract.API_VERSION,
            "kind": contract.KIND,
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "status": status,
        }
        with contextlib.suppress(FleetflowError):  # gone meanwhile: nothing to report
            client().apply_status(body)
            log.info("cnpg stand-in: Cluster %s/%s: %s", meta["namespace"], meta["name"], status["phase"])
    return [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items]


def watch_app_secrets(
    service_cluster: str,
    client: Callable[[], KubeClient],
    queue: Queue,
    watch_timeout: int,
    restart: Backoff,
) -> Watch:
    """Start the watch of the ``-app`` Secrets (see the module docstring); the caller stops it.
    ``restart``: how a watch that failed for good is started again."""
    informer = Informer(
        client,
        "v1",
        "Secret",
        label_selector=f"{contract.USER_TYPE_LABEL}=app",
        watch_timeout=watch_timeout,
    )

    listed = [False]  # at the first listing every Cluster is reconciled anyway (their own listing)

    def handle(batch: list[Event]) -> None:
        for event in batch:
            relisted = event.type == SYNCED and listed[0]
            listed[0] = listed[0] or event.type == SYNCED
            if event.type != "MODIFIED" and not relisted:
                continue
            for obj in event.items if relisted else (event.object,):
                meta = obj.get("metadata") or {}
                owner = (meta.get("labels") or {}).get(contract.CLUSTER_LABEL)
                if owner:
                    queue(meta["namespace"], owner)

    return hub().watch(informer, handle, name=f"cnpg-{service_cluster}-secrets", restart=restart)


def threads(
    service_cluster: str,
    databases: Databases,
    client: Callable[[], KubeClient],
    queue: Queue,
    stop: threading.Event,
) -> list[threading.Thread]:
    """The threads (not started) that do the kubelet's part for one service cluster until
    ``stop`` is set: :func:`supervise`."""
    return [
        threading.Thread(
            target=supervise,
            args=(service_cluster, databases, client, queue, stop),
            name=f"cnpg-{service_cluster}-kubelet",
            daemon=True,
        ),
    ]
