"""A stand-in for the CloudNativePG operator, on the local fleet ONLY (never a real cluster).

The local fleet has no kubelet, so the real operator cannot run there; this controller does
its work on this machine instead. For each ``postgresql.cnpg.io/v1`` Cluster X in namespace N
of a service cluster S it

1. adds the finalizer ``fleetflow.io/cnpg-standin`` (a deletion is noticed even if the
   controller was down when it happened);
2. runs one real PostgreSQL server for X alone, ``LocalPostgres(root/S/N/X)``, with the owner
   role and database of ``spec.bootstrap.initdb`` (database ``app``, owner = database, as in
   CloudNativePG), whose password is the existing ``X-app`` Secret's when there is one
   (CloudNativePG never regenerates an existing secret) and a new random one otherwise;
3. writes the Secret ``X-app``, the Services ``X-rw``/``X-ro``/``X-r`` (minus
   ``disabledDefaultServices``) and every ``managed.services.additional[]`` Service, all owned
   by X; their port is the server's real port and a LoadBalancer's status says 127.0.0.1;
4. reports the Cluster's status: "Setting up primary" while working, then "Cluster in healthy
   state" with condition Ready=True (reason ClusterIsReady).

When X is being deleted it destroys X's server (data, role, database) and removes the
finalizer; kube-controller-manager's garbage collector then removes the Secret and Services.
A server whose Cluster is gone for good (deleted and re-created, or its finalizer forced off)
is destroyed too, so a new Cluster of the same name starts empty, as it would with new PVCs.

The controller is level-triggered: every event makes it read the live Cluster and compare
with what is in place, so a replayed or stale event changes nothing. It lists, then watches
from the list's resourceVersion; a 410 Gone or a lost connection relists (with backoff), and
a full resync runs every few minutes. One Cluster's failure is logged, reported in its status
("Unable to create required cluster objects", or "Invalid cluster definition") and retried
with backoff; it never stops the controller. No password reaches a log line, an exception or
a status message.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleetflow import config
from fleetflow.errors import (
    APIConflictError,
    APIGoneError,
    APINotFoundError,
    FleetError,
    FleetflowError,
    TemporaryError,
    UsageError,
)
from fleetflow.fleet.cnpg import contract
from fleetflow.fleet.cnpg.contract import API_VERSION, FINALIZER, KIND, ClusterSpec
from fleetflow.fleet.postgres import LocalPostgres
from fleetflow.kube import KubeClient, WaitTimeoutError, client_for

log = logging.getLogger("fleetflow.cnpg")

CRD_API_VERSION = "apiextensions.k8s.io/v1"
WATCH_TIMEOUT = 5  # seconds per watch request: how long a stop may take to be noticed
RESYNC_SECONDS = 300.0  # full relist and reconcile of every Cluster
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
UID_FILE = "cluster-uid"  # next to the server's data: which Cluster (uid) the server belongs to

Key = tuple[str, str, str]  # (service cluster, namespace, name)


def default_root() -> Path:
    return config.fleet_dir() / "cnpg"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _redact(text: str, hidden: list[str]) -> str:
    for secret in hidden:
        if secret:
            text = text.replace(secret, "***")
    return text


@dataclass
class _Retry:
    due: float
    delay: float


@dataclass(frozen=True)
class _Done:
    """What was in place after the last complete reconcile of a Cluster."""

    uid: str
    generation: int
    port: int


class StandInController:
    """CloudNativePG's work for the Clusters of one or more service clusters (see the module docstring)."""

    def __init__(
        self,
        clients: Mapping[str, KubeClient],
        root: Path | None = None,
        *,
        watch_timeout: int = WATCH_TIMEOUT,
        resync_seconds: float = RESYNC_SECONDS,
        connect: Callable[[str], KubeClient] | None = None,
    ) -> None:
        """``connect(name)``, when given, builds a fresh client after connection errors (a
        restarted cluster may listen on a new port, written to the kubeconfig)."""
        self.clients = dict(clients)
        self.connect = connect
        self.root = (root or default_root()).expanduser().absolute()
        self.watch_timeout = watch_timeout
        self.resync_seconds = resync_seconds
        # Set once a service cluster's Clusters have been listed and reconciled.
        self.synced = {name: threading.Event() for name in self.clients}
        self._done: dict[Key, _Done] = {}
        self._retries: dict[Key, _Retry] = {}
        self._locks: dict[Key, threading.RLock] = {}
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
        """Wait for the Cluster CRD, then list and watch Clusters in all namespaces until ``stop``."""
        backoff = BACKOFF_FIRST
        log.info("cnpg stand-in: serving %s", service_cluster)
        while not stop.is_set():
            client = self.clients[service_cluster]
            try:
                if not self._await_crd(client, stop):
                    break
                self._list_and_watch(service_cluster, client, stop)
                backoff = BACKOFF_FIRST
            except APIGoneError:
                log.info("cnpg stand-in: %s: watch expired (410 Gone); relisting", service_cluster)
            except APINotFoundError as exc:
                log.warning("cnpg stand-in: %s: %s; waiting for the Cluster CRD", service_cluster, exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except TemporaryError as exc:
                log.warning("cnpg stand-in: %s: %s; relisting in %.1fs", service_cluster, exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                self._reconnect(service_cluster)
            except Exception as exc:  # the controller outlives its bugs; the next relist starts afresh
                log.error(
                    "cnpg stand-in: %s: unexpected %s: %s; relisting in %.1fs",
                    service_cluster,
                    type(exc).__name__,
                    exc,
                    backoff,
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        log.info("cnpg stand-in: stopped serving %s", service_cluster)

    def _reconnect(self, service_cluster: str) -> None:
        if self.connect is None:
            return
        try:
            self.clients[service_cluster] = self.connect(service_cluster)
        except FleetflowError as exc:  # e.g. the kubeconfig is being rewritten: keep the old client
            log.warning("cnpg stand-in: %s: cannot reconnect: %s", service_cluster, exc)

    def _await_crd(self, client: KubeClient, stop: threading.Event) -> bool:
        """Watch until the Cluster CRD is established (helm installed the chart); False if stopped."""
        announced = False
        while not stop.is_set():
            try:
                client.wait(
                    CRD_API_VERSION,
                    "CustomResourceDefinition",
                    contract.CRD_NAME,
                    None,
                    _established,
                    timeout=self.watch_timeout,
                    awaiting=f"CRD {contract.CRD_NAME} to be established",
                )
                return True
            except WaitTimeoutError:
                if not announced:
                    log.info(
                        "cnpg stand-in: %s does not serve %s yet; waiting for the chart to be installed",
                        client.context,
                        contract.CRD_NAME,
                    )
                    announced = True
        return False

    def _list_and_watch(self, service_cluster: str, client: KubeClient, stop: threading.Event) -> None:
        items, version = client.list(API_VERSION, KIND)
        self._sweep(service_cluster, items)
        for obj in items:
            meta = obj["metadata"]
            self.sync(service_cluster, meta["namespace"], meta["name"], force=True)
        self.synced[service_cluster].set()
        log.info("cnpg stand-in: %s: %d Cluster(s) in sync", service_cluster, len(items))
        resync_at = time.monotonic() + self.resync_seconds
        while not stop.is_set() and time.monotonic() < resync_at:
            timeout = self._watch_timeout(service_cluster)
            for event, obj in client.stream(API_VERSION, KIND, resource_version=version, timeout=timeout):
                meta = obj.get("metadata") or {}
                version = meta.get("resourceVersion") or version
                if event in ("ADDED", "MODIFIED"):
                    self.sync(service_cluster, meta["namespace"], meta["name"])
                elif event == "DELETED":
                    self._forget(service_cluster, meta["namespace"], meta["name"], meta.get("uid"))
                if stop.is_set():
                    return
            self._run_due_retries(service_cluster, stop)

    def _watch_timeout(self, service_cluster: str) -> int:
        """Watch no longer than until the next retry of a failed Cluster is due."""
        with self._guard:
            dues = [r.due for k, r in self._retries.items() if k[0] == service_cluster]
        if not dues:
            return self.watch_timeout
        return max(1, min(self.watch_timeout, math.ceil(min(dues) - time.monotonic())))

    def _run_due_retries(self, service_cluster: str, stop: threading.Event) -> None:
        now = time.monotonic()
        with self._guard:
            due = [k for k, r in self._retries.items() if k[0] == service_cluster and r.due <= now]
        for _, namespace, name in due:
            if stop.is_set():
                return
            self.sync(service_cluster, namespace, name, force=True)

    # -- one Cluster -----------------------------------------------------------------------

    def sync(self, service_cluster: str, namespace: str, name: str, *, force: bool = False) -> None:
        """Reconcile one Cluster; a failure is logged and retried later with backoff, never raised."""
        key = (service_cluster, namespace, name)
        try:
            self.reconcile(service_cluster, namespace, name, force=force)
        except UsageError as exc:
            # An invalid definition stays invalid until the Cluster changes, which is an event.
            with self._guard:
                self._retries.pop(key, None)
            log.warning(
                "cnpg stand-in: Cluster %s/%s on %s: %s; waiting for it to change",
                namespace,
                name,
                service_cluster,
                exc,
            )
        except Exception as exc:
            with self._guard:
                previous = self._retries.get(key)
                delay = BACKOFF_FIRST if previous is None else min(previous.delay * 2, BACKOFF_MAX)
                if isinstance(exc, APINotFoundError):
                    delay = BACKOFF_FIRST  # typically deleted meanwhile: look again soon
                self._retries[key] = _Retry(time.monotonic() + delay, delay)
            log.warning(
                "cnpg stand-in: Cluster %s/%s on %s: %s: %s; retrying in %.1fs",
                namespace,
                name,
                service_cluster,
                type(exc).__name__,
                exc,
                delay,
            )
        else:
            with self._guard:
                self._retries.pop(key, None)

    def reconcile(self, service_cluster: str, namespace: str, name: str, *, force: bool = False) -> None:
        """Bring one Cluster (read live) and what it owns in line with CloudNativePG's contract.

        Without ``force`` a Cluster whose generation, uid and server port are those of the last
        complete reconcile, and which is healthy, is left alone. Errors that concern the
        Cluster are reported in its status, then raised (redacted) for :meth:`sync` to retry.
        """
        key = (service_cluster, namespace, name)
        client = self.clients[service_cluster]
        with self._lock(key):
            obj = client.get_or_none(API_VERSION, KIND, name, namespace)
            if obj is None:
                self._forget(service_cluster, namespace, name, None)
                return
            meta = obj["metadata"]
            if meta.get("deletionTimestamp"):
                self._finalize(client, service_cluster, obj)
                return
            if not force and self._in_place(service_cluster, obj):
                return
            hidden: list[str] = []
            try:
                spec = contract.parse(obj)
                obj = self._ensure_finalizer(client, obj)
                port = self._ensure(client, service_cluster, obj, spec, hidden)
            except Exception as exc:
                phase = contract.PHASE_INVALID if isinstance(exc, UsageError) else contract.PHASE_UNABLE
                message = _redact(str(exc), hidden)
                if not isinstance(exc, FleetflowError):
                    message = f"{type(exc).__name__}: {message}"
                if not isinstance(exc, TemporaryError):  # a conflict or an unreachable API is just retried
                    with contextlib.suppress(FleetflowError):
                        self._write_status(client, obj, phase, reason=message)
                with self._guard:
                    self._done.pop(key, None)
                if isinstance(exc, FleetflowError):
                    raise type(exc)(message) from None
                raise FleetError(message) from None
            with self._guard:
                self._done[key] = _Done(meta["uid"], int(meta.get("generation") or 0), port)

    def _in_place(self, service_cluster: str, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        key = (service_cluster, meta["namespace"], meta["name"])
        with self._guard:
            done = self._done.get(key)
        if done is None or FINALIZER not in (meta.get("finalizers") or []) or not contract.is_ready(obj):
            return False
        if (done.uid, done.generation) != (meta["uid"], int(meta.get("generation") or 0)):
            return False
        status = self.server(service_cluster, meta["namespace"], meta["name"]).status()
        return status.endpoint is not None and status.endpoint.port == done.port

    def _ensure(
        self,
        client: KubeClient,
        service_cluster: str,
        obj: dict[str, Any],
        spec: ClusterSpec,
        hidden: list[str],
    ) -> int:
        if (obj.get("status") or {}).get("phase") != contract.PHASE_HEALTHY:
            self._write_status(client, obj, contract.PHASE_SETTING_UP)
        server = self.server(service_cluster, spec.namespace, spec.name)
        self._claim(server, spec)
        port = server.start().port
        password = self._password(client, spec, server, hidden)
        if spec.user_secret is None:
            client.apply(contract.app_secret(obj, spec, password, port))
        self._ensure_services(client, obj, spec, port)
        self._write_status(client, obj, contract.PHASE_HEALTHY)
        return port

    def _password(
        self, client: KubeClient, spec: ClusterSpec, server: LocalPostgres, hidden: list[str]
    ) -> str:
        """The owner's password: the user's initdb secret's, else the existing ``-app`` secret's, else new."""
        if spec.user_secret is not None:
            secret = client.get_or_none("v1", "Secret", spec.user_secret, spec.namespace)
            if secret is None:
                raise FleetError(f"the initdb secret {spec.namespace}/{spec.user_secret} does not exist")
            username, password = contract.decode(secret, "username"), contract.decode(secret, "password")
            if not password:
                raise FleetError(f"Secret {spec.namespace}/{spec.user_secret} has no password")
            if username and username != spec.owner:
                raise FleetError(
                    f"Secret {spec.namespace}/{spec.user_secret} is for user {username}, "
                    f"but the database owner is {spec.owner}"
                )
        else:
            existing = client.get_or_none("v1", "Secret", spec.app_secret_name, spec.namespace)
            password = contract.decode(existing, "password")
        if password:
            hidden.append(password)
            _pin_password(server, spec.owner, password)
        password = server.ensure_database(spec.owner, spec.database)
        hidden.append(password)
        return password

    def _ensure_services(self, client: KubeClient, obj: dict[str, Any], spec: ClusterSpec, port: int) -> None:
        wanted = [contract.default_service(obj, spec, t, port) for t in spec.default_services]
        wanted += [contract.additional_service(obj, spec, entry, port) for entry in spec.additional]
        for service in wanted:
            client.apply(service)
            if service["spec"]["type"] == "LoadBalancer":
                client.apply_status(contract.load_balancer_status(service))
        # What CloudNativePG removes: disabled default services, additional services no longer asked for.
        keep = {s["metadata"]["name"] for s in wanted}
        stale = [contract.service_name(spec.name, t) for t in contract.SELECTOR_TYPES]
        managed, _ = client.list(
            "v1",
            "Service",
            spec.namespace,
            label_selector=f"{contract.CLUSTER_LABEL}={spec.name},{contract.IS_MANAGED_LABEL}=true",
        )
        stale += [s["metadata"]["name"] for s in managed]
        for name in sorted(set(stale) - keep):
            live = client.get_or_none("v1", "Service", name, spec.namespace)
            if live is not None and contract.owned_by(live, spec.uid):
                client.delete("v1", "Service", name, spec.namespace)

    def _ensure_finalizer(self, client: KubeClient, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER in finalizers:
            return obj
        patch = {
            "metadata": {"finalizers": [*finalizers, FINALIZER], "resourceVersion": meta["resourceVersion"]}
        }
        return client.merge_patch(API_VERSION, KIND, meta["name"], meta["namespace"], patch)

    def _write_status(self, client: KubeClient, obj: dict[str, Any], phase: str, *, reason: str = "") -> None:
        meta = obj["metadata"]
        previous = obj.get("status") or {}
        status = contract.cluster_status(
            meta["name"],
            contract.requested_instances(obj),
            phase,
            previous=previous,
            now=_now(),
            reason=reason,
        )
        if contract.status_is(previous, status):
            return
        live = client.apply_status(
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                "status": status,
            }
        )
        obj["status"] = live.get("status") or status
        log.info("cnpg stand-in: Cluster %s/%s: %s", meta["namespace"], meta["name"], phase)

    def _finalize(self, client: KubeClient, service_cluster: str, obj: dict[str, Any]) -> None:
        """The Cluster is being deleted: destroy its server, then let it go."""
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if FINALIZER not in (meta.get("finalizers") or []):
            return
        self._destroy(service_cluster, namespace, name, meta["uid"])
        for _ in range(5):
            remaining = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
            if len(remaining) == len(meta.get("finalizers") or []):
                return
            patch = {
                "metadata": {"finalizers": remaining or None, "resourceVersion": meta["resourceVersion"]}
            }
            try:
                client.merge_patch(API_VERSION, KIND, name, namespace, patch)
                log.info("cnpg stand-in: Cluster %s/%s on %s: deleted", namespace, name, service_cluster)
                return
            except APIConflictError:
                fresh = client.get_or_none(API_VERSION, KIND, name, namespace)
                if fresh is None:
                    return
                meta = fresh["metadata"]
            except APINotFoundError:
                return
        raise FleetError(f"could not remove the finalizer of Cluster {namespace}/{name}: it keeps changing")

    def _forget(self, service_cluster: str, namespace: str, name: str, uid: str | None) -> None:
        """The Cluster is gone: its server goes too (if it was this Cluster's, when ``uid`` is known)."""
        with self._lock((service_cluster, namespace, name)):
            self._destroy(service_cluster, namespace, name, uid)

    def _destroy(self, service_cluster: str, namespace: str, name: str, uid: str | None) -> None:
        key = (service_cluster, namespace, name)
        with self._guard:
            self._done.pop(key, None)
            self._retries.pop(key, None)
        server = self.server(service_cluster, namespace, name)
        owner = _read_uid(server)
        if not server.root.exists() or (uid is not None and owner is not None and owner != uid):
            return
        server.destroy()
        with contextlib.suppress(OSError):
            server.root.parent.rmdir()  # the namespace's directory, once empty
        log.info("cnpg stand-in: Cluster %s/%s on %s: server destroyed", namespace, name, service_cluster)

    def _sweep(self, service_cluster: str, items: list[dict[str, Any]]) -> None:
        """Destroy servers whose Cluster no longer exists (its finalizer was forced off meanwhile)."""
        live = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items}
        base = self.root / service_cluster
        if not base.is_dir():
            return
        for root in sorted(base.glob("*/*")):
            if (root / UID_FILE).is_file() and (root.parent.name, root.name) not in live:
                log.info(
                    "cnpg stand-in: %s: Cluster %s/%s is gone", service_cluster, root.parent.name, root.name
                )
                self._forget(service_cluster, root.parent.name, root.name, None)

    def _claim(self, server: LocalPostgres, spec: ClusterSpec) -> None:
        """Make ``server`` this Cluster's; one left by an earlier Cluster of the same name is destroyed."""
        owner = _read_uid(server)
        if owner is not None and owner != spec.uid:
            log.info(
                "cnpg stand-in: Cluster %s/%s was re-created; destroying the old one's server",
                spec.namespace,
                spec.name,
            )
            server.destroy()
        if owner != spec.uid:
            server.root.mkdir(parents=True, exist_ok=True)
            (server.root / UID_FILE).write_text(spec.uid + "\n")

    # -- helpers ---------------------------------------------------------------------------

    def server(self, service_cluster: str, namespace: str, name: str) -> LocalPostgres:
        """The PostgreSQL server standing in for Cluster ``namespace/name`` of ``service_cluster``."""
        return LocalPostgres(self.root / service_cluster / namespace / name, progress=_progress)

    @contextlib.contextmanager
    def _lock(self, key: Key) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.RLock())
        with lock:
            yield


def _progress(message: str) -> None:
    log.info("cnpg stand-in: %s", message)


def _established(crd: dict[str, Any] | None) -> bool:
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _read_uid(server: LocalPostgres) -> str | None:
    try:
        return (server.root / UID_FILE).read_text().strip() or None
    except OSError:
        return None


def _pin_password(server: LocalPostgres, role: str, password: str) -> None:
    """Make ``server.ensure_database(role, ...)`` assert ``password`` on ``role``, as CloudNativePG
    keeps the app user's password in line with its secret."""
    server.pin_password(role, password)


def servers(root: Path | None = None) -> list[LocalPostgres]:
    """Every stand-in server under ``root`` (``root/<service cluster>/<namespace>/<cluster>``)."""
    base = (root or default_root()).expanduser().absolute()
    return [LocalPostgres(path) for path in sorted(base.glob("*/*/*")) if (path / UID_FILE).is_file()]


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
