"""A stand-in for the CloudNativePG operator, on the local fleet ONLY (never a real cluster).

The local fleet has no kubelet, so the real operator cannot run there; this controller does
its work on this machine instead. For each ``postgresql.cnpg.io/v1`` Cluster X in namespace N
of a service cluster S it

1. adds the finalizer ``fleetflow.io/cnpg-standin`` (a deletion is noticed even if the
   controller was down when it happened);
2. makes a login role and a database for X alone on S's PostgreSQL server (one real server
   per service cluster, ``LocalPostgres(root/S)``, see ``databases.py``); both are named
   ``contract.sql_name(N, X)`` (e.g. ``c_team_a_cluster_wl1_3f2a9c0b1d7e``), and only that
   role may connect to that database. The password is the existing ``X-app`` Secret's when
   there is one (CloudNativePG never regenerates an existing secret), the user's
   ``bootstrap.initdb.secret``'s when given, else a new random one;
3. writes the Secret ``X-app`` (with that role and database as ``username``/``dbname`` and in
   every URI), the Services ``X-rw``/``X-ro``/``X-r`` (minus ``disabledDefaultServices``) and
   every ``managed.services.additional[]`` Service, all owned by X; their port is the server's
   real port and a LoadBalancer's status says 127.0.0.1;
4. reports the Cluster's status: "Setting up primary" while working, then "Cluster in healthy
   state" with condition Ready=True (reason ClusterIsReady);
5. does what the kubelet and CloudNativePG's instance manager do (``instances.py``): a server
   that dies is reported (every Cluster of S "Waiting for the instances to become active",
   not ready) and restarted within seconds; a password written into an ``X-app`` Secret is
   set on X's role.

Why one server per service cluster, not per Cluster: a server per Cluster would make a burst of
100 Clusters 100 ``initdb`` runs and 100 servers (seconds each, minutes on 2 cores, and 100 idle
postmasters); a role and database on a running server take tens of milliseconds. The price, compared with
CloudNativePG: the role and database are not the ``app``/``app`` (or ``initdb.owner`` /
``initdb.database``) that the Cluster names, because a server can hold each name once; a
consumer must take them from the ``X-app`` Secret (with a user-provided ``initdb.secret`` the
role is still ``sql_name(N, X)``), and the Clusters of one service cluster share its port.
Separate credentials and privileges keep them apart: PUBLIC may connect to no database.

When X is being deleted it drops X's role and database (the data goes, as with CloudNativePG's
PVCs) and removes the finalizer; kube-controller-manager's garbage collector then removes the
Secret and Services. A database whose Cluster is gone for good (deleted and re-created, or its
finalizer forced off) is dropped too, so a new Cluster of the same name starts empty.

The controller is level-triggered: every event makes it read the live Cluster and compare
with what is in place, so a replayed or stale event changes nothing. Per service cluster an
informer (``fleetflow.kube.informer``: list, watch, resume, relist on 410 Gone, backoff; a full
resync every few minutes) feeds a work queue and does nothing else; a small pool
of workers reconciles from the queue, at most one reconcile per Cluster at a time, so one slow
Cluster never holds up the watch or the others. One Cluster's failure is logged, reported in
its status ("Unable to create required cluster objects", or "Invalid cluster definition") and
retried with backoff; it never stops the controller. No password reaches a log line, an
exception or a status message.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from fleetflow import config
from fleetflow.backoff import Backoff, Delays
from fleetflow.errors import APINotFoundError, FleetflowError, UsageError
from fleetflow.kube import KubeClient, client_for
from fleetflow.kube.hub import hub
from fleetflow.kube.informer import SYNCED, Event, Informer
from fleetflow.supervisor.postgres import LocalPostgres
from fleetflow_dev.cnpg import instances
from fleetflow_dev.cnpg.contract import API_VERSION, KIND
from fleetflow_dev.cnpg.databases import Databases
from fleetflow_dev.cnpg.databases import servers as _servers
from fleetflow_dev.cnpg.reconcile import Key, Reconciler
from fleetflow_dev.cnpg.workqueue import WorkQueue

log = logging.getLogger("fleetflow.cnpg")

CRD_API_VERSION = "apiextensions.k8s.io/v1"
WATCH_TIMEOUT = 5  # seconds per watch request (then resumed; a stop closes it at once)
RESYNC_SECONDS = 300.0  # full relist and reconcile of every Cluster
WORKERS = 6  # reconciles at once per service cluster
RECONCILE_BACKOFF = Backoff(first=0.5, cap=30.0)  # one Cluster's failed reconciles
SERVE_BACKOFF = Backoff(first=0.5, cap=30.0)  # a service cluster's watch that failed for good


def default_root() -> Path:
    return config.fleet_dir() / "cnpg"


@dataclass
class _Service:
    """One service cluster's work queue, and the Clusters of its last list not reconciled yet."""

    queue: WorkQueue[Key] = field(default_factory=WorkQueue)
    unsynced: set[Key] = field(default_factory=set)
    listed: int = 0


class StandInController:
    """CloudNativePG's work for the Clusters of one or more service clusters (see the module docstring)."""

    def __init__(
        self,
        clients: Mapping[str, KubeClient],
        root: Path | None = None,
        *,
        watch_timeout: int = WATCH_TIMEOUT,
        resync_seconds: float = RESYNC_SECONDS,
        workers: int = WORKERS,
        connect: Callable[[str], KubeClient] | None = None,
    ) -> None:
        """``connect(name)``, when given, builds a fresh client after connection errors (a
        restarted cluster may listen on a new port, written to the kubeconfig)."""
        self.clients = dict(clients)
        self.connect = connect
        self.root = (root or default_root()).expanduser().absolute()
        self.watch_timeout = watch_timeout
        self.resync_seconds = resync_seconds
        self.workers = max(1, workers)
        self.databases = {name: Databases(self.root / name, _progress) for name in self.clients}
        self.reconciler = Reconciler(self.clients, self.databases)
        # Set once a service cluster's Clusters have been listed and reconciled.
        self.synced = {name: threading.Event() for name in self.clients}
        self._services = {name: _Service() for name in self.clients}
        self._backoff: dict[Key, Delays] = {}
        self._guard = threading.Lock()

    # -- running ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve every service cluster, one thread each, until ``stop`` is set."""
        threads = [
            threading.Thread(
                target=self.run_cluster, args=(name, stop), name=f"cnpg-standin-{name}", daemon=True
            )
            for name in self.clients
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def run_cluster(self, service_cluster: str, stop: threading.Event) -> None:
        """Wait for the Cluster CRD, then list and watch Clusters in all namespaces until ``stop``.

        The watch only queues; ``workers`` threads reconcile from the queue.
        """
        log.info("cnpg stand-in: serving %s", service_cluster)
        ended = threading.Event()  # set when serving ends (``stop``, or a crash): the workers end too
        workers = [
            threading.Thread(
                target=self._work,
                args=(service_cluster, ended),
                name=f"cnpg-{service_cluster}-{i}",
                daemon=True,
            )
            for i in range(self.workers)
        ]
        queue = self._services[service_cluster].queue

        def reconcile(namespace: str, name: str) -> None:
            queue.add((service_cluster, namespace, name), force=True)

        workers += instances.threads(
            service_cluster,
            self.databases[service_cluster],
            lambda: self.clients[service_cluster],
            reconcile,
            ended,
        )
        for worker in workers:
            worker.start()
        client = partial(self._client, service_cluster)
        secrets = instances.watch_app_secrets(
            service_cluster, client, reconcile, self.watch_timeout, SERVE_BACKOFF
        )
        try:
            self._serve(service_cluster, stop)
        finally:
            secrets.stop()
            ended.set()
            self._services[service_cluster].queue.wake()
            for worker in workers:
                worker.join()
            self.databases[service_cluster].server.close()
        log.info("cnpg stand-in: stopped serving %s", service_cluster)

    def _serve(self, service_cluster: str, stop: threading.Event) -> None:
        """An informer on the Clusters of ``service_cluster`` (all namespaces) until ``stop``:
        it waits for the Cluster CRD to be served (helm installs the chart), lists, watches,
        resumes, relists on 410 Gone and every ``resync_seconds``, backing off on failures; its
        batches only queue. A watch that fails for good is started again (``SERVE_BACKOFF``)."""
        informer = Informer(
            lambda: self._client(service_cluster),
            API_VERSION,
            KIND,
            watch_timeout=self.watch_timeout,
            retry_not_served=True,
            relist_every=self.resync_seconds,
        )
        watch = hub().watch(
            informer,
            partial(self._queue_batch, service_cluster),
            name=f"cnpg-{service_cluster}",
            restart=SERVE_BACKOFF,
        )
        try:
            stop.wait()
        finally:
            watch.stop()

    def _client(self, service_cluster: str) -> KubeClient:
        """The client, built again from the kubeconfig when it changed (a restarted cluster may
        listen on a new port)."""
        if self.connect is not None:
            try:
                self.clients[service_cluster] = self.connect(service_cluster)
            except FleetflowError as exc:  # e.g. the kubeconfig is being rewritten: keep the old client
                log.warning("cnpg stand-in: %s: cannot reconnect: %s", service_cluster, exc)
        return self.clients[service_cluster]

    def _queue_batch(self, service_cluster: str, batch: list[Event]) -> None:
        """Queue what the informer saw: a listing queues every Cluster (and the databases whose
        Cluster is gone), a change its Cluster (a DELETED Cluster reads as gone: dropped)."""
        service = self._services[service_cluster]
        for event in batch:
            if event.type == SYNCED:
                keys = [
                    (service_cluster, o["metadata"]["namespace"], o["metadata"]["name"]) for o in event.items
                ]
                with self._guard:
                    service.unsynced = set(keys)
                    service.listed = len(keys)
                for key in keys:
                    service.queue.add(key, force=True)
                self._mark_synced(service_cluster, None)
                self._queue_orphans(service_cluster, {(k[1], k[2]) for k in keys})
            else:
                meta = event.object.get("metadata") or {}
                service.queue.add((service_cluster, meta["namespace"], meta["name"]))

    def _queue_orphans(self, service_cluster: str, live: set[tuple[str, str]]) -> None:
        """Queue the databases whose Cluster is gone (its finalizer was forced off meanwhile)."""
        try:
            orphans = self.databases[service_cluster].orphans(live)
        except FleetflowError as exc:  # the server cannot start now; the next relist looks again
            log.warning("cnpg stand-in: %s: cannot list its databases: %s", service_cluster, exc)
            return
        for namespace, name in orphans:
            log.info("cnpg stand-in: %s: Cluster %s/%s is gone", service_cluster, namespace, name)
            self._services[service_cluster].queue.add((service_cluster, namespace, name), force=True)

    def _work(self, service_cluster: str, stop: threading.Event) -> None:
        queue = self._services[service_cluster].queue
        while (item := queue.get(stop)) is not None:
            key, force = item
            try:
                self.sync(*key, force=force)
            finally:
                queue.done(key)
                self._mark_synced(service_cluster, key)

    def _mark_synced(self, service_cluster: str, key: Key | None) -> None:
        service = self._services[service_cluster]
        with self._guard:
            if key is not None:
                if key not in service.unsynced:
                    return
                service.unsynced.discard(key)
            if service.unsynced:
                return
            listed = service.listed
        if not self.synced[service_cluster].is_set():
            log.info("cnpg stand-in: %s: %d Cluster(s) in sync", service_cluster, listed)
        self.synced[service_cluster].set()

    # -- one Cluster -----------------------------------------------------------------------

    def sync(self, service_cluster: str, namespace: str, name: str, *, force: bool = False) -> None:
        """Reconcile one Cluster; a failure is logged and queued again with backoff, never raised."""
        key = (service_cluster, namespace, name)
        try:
            self.reconcile(service_cluster, namespace, name, force=force)
        except UsageError as exc:
            # An invalid definition stays invalid until the Cluster changes, which is an event.
            with self._guard:
                self._backoff.pop(key, None)
            log.warning(
                "cnpg stand-in: Cluster %s/%s on %s: %s; waiting for it to change",
                namespace,
                name,
                service_cluster,
                exc,
            )
        except Exception as exc:
            with self._guard:
                delays = self._backoff.setdefault(key, RECONCILE_BACKOFF.delays())
                if isinstance(exc, APINotFoundError):
                    delays.reset()  # typically deleted meanwhile: look again soon
                delay = delays.next() or RECONCILE_BACKOFF.cap
            log.warning(
                "cnpg stand-in: Cluster %s/%s on %s: %s: %s; retrying in %.1fs",
                namespace,
                name,
                service_cluster,
                type(exc).__name__,
                exc,
                delay,
            )
            self._services[service_cluster].queue.add(key, force=True, delay=delay)
        else:
            with self._guard:
                self._backoff.pop(key, None)

    def reconcile(self, service_cluster: str, namespace: str, name: str, *, force: bool = False) -> None:
        """See :meth:`Reconciler.reconcile`; raises (redacted) what went wrong."""
        self.reconciler.reconcile(service_cluster, namespace, name, force=force)


def _progress(message: str) -> None:
    log.info("cnpg stand-in: %s", message)


def servers(root: Path | None = None) -> list[LocalPostgres]:
    """Every stand-in server under ``root`` (``root/<service cluster>``, one per service cluster)."""
    return _servers((root or default_root()).expanduser().absolute())


def stop_servers(root: Path | None = None) -> int:
    """Stop every stand-in server under ``root`` (``fleet down``); data stays. Returns how many ran."""
    stopped = 0
    for server in servers(root):
        if server.status().state == "Running":
            server.stop()
            stopped += 1
    return stopped


def destroy_servers(root: Path | None = None) -> int:
    """Destroy every stand-in server under ``root`` (data included). Returns how many there were."""
    found = servers(root)
    for server in found:
        server.destroy()
    base = (root or default_root()).expanduser().absolute()
    if base.is_dir():
        shutil.rmtree(base, ignore_errors=True)
    return len(found)


def run(kubeconfig: Path, contexts: list[str], stop: threading.Event, root: Path | None = None) -> None:
    """Stand in for CloudNativePG on the clusters of ``contexts`` until ``stop`` is set (one thread each)."""

    def connect(context: str) -> KubeClient:
        return client_for(context, kubeconfig)  # a new client only when the kubeconfig changed

    StandInController({context: connect(context) for context in contexts}, root, connect=connect).run(stop)
