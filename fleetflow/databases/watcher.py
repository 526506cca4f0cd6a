"""The request watcher: Database objects in every registered cluster become Prefect events.

One watch per registered cluster, an informer on the process's one watch loop
(:mod:`fleetflow.kube.hub`: no thread per cluster); clusters are added and removed as they
register and deregister (an informer on the registry's FleetClusters). A request needs work
while fleetflow has not seen its current generation through: no finalizer yet, a status whose
``observedGeneration`` lags, a phase other than Ready or Failed, or a deletion pending. For such
a request the watcher emits ``fleetflow.database-request.changed`` with an id made of the
object's uid, generation and whether it is being deleted, so:

- a restart relists every cluster and emits for every request that still needs work: nothing
  lost, including a Database deleted while fleetflow was down (its finalizer holds it);
- emitting again for the same state (a restart, a status write by the flow, a relist after a
  dropped watch) repeats the same event id, which the Prefect server deduplicates, and the
  flow it starts is idempotent: nothing duplicated;
- no state needs persisting, unlike the label watcher's: the request's own status is the state;
- a Prefect server that is down is waited for (``events.emit_until_accepted``): a rotated
  password or a health change while it is down is sent once it is back, not dropped.

A second watch per cluster follows CloudNativePG's ``-app`` secrets there (the cluster as a service
cluster): a rotated password re-emits the event of the request its CNPG Cluster was made for, so
the credentials next to the request follow within seconds, not at the next reconcile. The label
path's database is such a request too, so the same converge rewrites its ``pg-credentials``.
The id is made of the secret's uid and resourceVersion: a relist or restart repeats it.

A third watch follows the CNPG Clusters there: when a request's Cluster stops being ready (its
instance died) while the request says Ready, or is ready again while the request says it is
unavailable, the request's event is emitted (id: the Cluster's uid and resourceVersion), and
the flow's converge shows it: Ready=False/Unavailable, credentials untouched, then Ready.

A cluster registered without the register-cluster flow (a FleetCluster applied by GitOps) gets
the Database CRD from its watch on first sync, so its teams can apply requests. A cluster whose
API cannot be reached backs off and resumes (the informer's), without holding up the others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from fleetflow import events
from fleetflow.databases import crd, health, inventory, status
from fleetflow.databases.names import CNPG_API
from fleetflow.databases.spec import RequestRef
from fleetflow.databases.views import CnpgCluster, Meta
from fleetflow.errors import APINotFoundError, FleetflowError, TemporaryError
from fleetflow.kube import KubeClient
from fleetflow.kube.hub import Handler, Watch, hub
from fleetflow.kube.informer import SYNCED, Event, Informer
from fleetflow.registry import API_VERSION, KIND, Registry

log = logging.getLogger("fleetflow.databases.watcher")

WATCH_TIMEOUT = 300
# CloudNativePG's secrets of a Cluster; its application-user ones are picked by :func:`app_secret`.
CNPG_SECRETS = "cnpg.io/cluster"
Emit = Callable[[list[events.FleetEvent]], None]


def needs_work(obj: dict[str, Any]) -> bool:
    meta = Meta.of(obj)
    if meta.deleting:
        return crd.FINALIZER in meta.finalizers
    return crd.FINALIZER not in meta.finalizers or not status.converged(obj)


def app_secret(secret: dict[str, Any]) -> bool:
    """Whether a secret of a CNPG Cluster is its application user's ``<cluster>-app``.

    CloudNativePG labels it ``cnpg.io/userType=app`` only from 1.25 on; v1.24.1 (the seed's
    operator) gives it ``cnpg.io/cluster`` and ``cnpg.io/reload`` alone, so without that label
    the name decides.
    """
    meta = Meta.of(secret)
    if "cnpg.io/userType" in meta.labels:
        return meta.labels["cnpg.io/userType"] == "app"
    cluster = meta.labels.get("cnpg.io/cluster")
    return bool(cluster) and meta.name == f"{cluster}-app"


def event_for(cluster: str, obj: dict[str, Any]) -> events.FleetEvent:
    """The event for this state of the request; the same state always gives the same id."""
    meta = Meta.of(obj)
    ref = RequestRef.of(cluster, obj)
    deleting = "deleting" if meta.deleting else "present"
    return events.FleetEvent(
        events.DATABASE_REQUEST_CHANGED,
        events.request_resource(ref.cluster, ref.namespace, ref.name),
        # The registered name is part of the id: two registrations of one server (while the
        # watcher switches between them) must not make the server drop one as a duplicate.
        events.event_id(cluster, meta.uid, "request", str(meta.generation), deleting),
        {"request": str(ref), "cluster": ref.cluster, "generation": meta.generation},
    )


class _Stop(threading.Event):
    """A cluster's stop event: setting it also stops the watches started under it (from any
    thread), so stopping needs no thread of its own waiting for it."""

    def __init__(self) -> None:
        super().__init__()
        self._watches: list[Watch] = []
        self._lock = threading.Lock()

    def add(self, watch: Watch) -> None:
        with self._lock:
            self._watches.append(watch)
            stopped = self.is_set()
        if stopped:
            watch.stop()

    def set(self) -> None:
        super().set()
        with self._lock:
            watches = list(self._watches)
        for watch in watches:
            watch.stop()


class _Part:
    """One of a cluster's watches, started on the process's watch loop (not a thread) by
    :meth:`start`; ``watch`` is the running :class:`~fleetflow.kube.hub.Watch`."""

    def __init__(self, owner: ClusterWatch, name: str, informer: Callable[[], Informer], handle: Handler):
        self.owner, self.name, self.informer, self.handle = owner, name, informer, handle
        self.watch: Watch | None = None

    def start(self) -> None:
        self.watch = hub().watch(self.informer(), self.handle, name=f"{self.name}-{self.owner.cluster}")
        stop = self.owner.stop
        if isinstance(stop, _Stop):
            stop.add(self.watch)


class ClusterWatch:
    """The Database, secret and health watches of one cluster, until ``stop`` is set.

    Each is an informer on the process's one watch loop (:mod:`fleetflow.kube.hub`), not a
    thread: ``requests``, ``rotations`` and ``health`` are started with :meth:`start` (all
    three) or one by one; their handlers (:meth:`on_requests`, :meth:`on_rotations`,
    :meth:`on_health`) take the informer's batches.
    """

    def __init__(self, registry: Registry, cluster: str, emit: Emit, watch_timeout: int) -> None:
        self.registry, self.cluster, self.watch_timeout = registry, cluster, watch_timeout
        self._send = emit
        self.stop: threading.Event = _Stop()
        self.synced = threading.Event()
        self.rotations_synced = threading.Event()  # the secrets are listed: changes from now on are seen
        self.health_synced = threading.Event()  # the CNPG Clusters are listed
        self.requests = _Part(self, "requests", self._requests_informer, self.on_requests)
        self.rotations = _Part(self, "rotations", self._rotations_informer, self.on_rotations)
        self.health = _Part(self, "health", self._health_informer, self.on_health)

    def start(self) -> None:
        for part in (self.requests, self.rotations, self.health):
            part.start()

    # -- informers: what each watch lists and watches ------------------------------------------
    def _informer(self, api_version: str, kind: str, **options: Any) -> Informer:
        return Informer(
            self._client,
            api_version,
            kind,
            watch_timeout=self.watch_timeout,
            retry_not_served=True,
            **options,
        )

    def _requests_informer(self) -> Informer:
        return self._informer(crd.API_VERSION, crd.KIND, prepare=self._ensure_crd)

    def _rotations_informer(self) -> Informer:
        """This cluster as a service cluster: CloudNativePG's secrets."""
        return self._informer("v1", "Secret", label_selector=CNPG_SECRETS)

    def _health_informer(self) -> Informer:
        """This cluster as a service cluster: CNPG Clusters (looked at again, with backoff, while
        the kind is not served: its operator is being installed)."""
        return self._informer(CNPG_API, "Cluster")

    def _ensure_crd(self) -> None:
        client = self._client()
        if client.get_or_none("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd.CRD_NAME) is None:
            crd.install(client)  # registered without the flow (GitOps): the cluster gets the CRD here
            log.info("%s: installed the Database CRD", self.cluster)

    # -- handlers --------------------------------------------------------------------------------
    def on_requests(self, batch: list[Event]) -> None:
        """Database requests that need work are emitted: all of a listing's, and each change's."""
        if self.stop.is_set():
            return  # stopped (e.g. the name is now an alias): nothing more is sent under it
        pending: list[events.FleetEvent] = []
        for event in batch:
            if event.type == SYNCED:
                found = [event_for(self.cluster, obj) for obj in event.items if needs_work(obj)]
                log.info(
                    "%s: %d Database request(s), %d need work", self.cluster, len(event.items), len(found)
                )
                pending.extend(found)
            elif event.type in ("ADDED", "MODIFIED") and needs_work(event.object):
                pending.append(event_for(self.cluster, event.object))
        if pending:
            self._guarded("Database requests", lambda: self.emit(pending))
            for sent in pending:
                log.info("emitted %s for %s (id %s)", sent.event, sent.payload["request"], sent.id)
        if any(event.type == SYNCED for event in batch):
            self.synced.set()

    def on_rotations(self, batch: list[Event]) -> None:
        """When the ``-app`` Secret of a CNPG Cluster changes (a rotated password), the request it
        was made for is converged again at once, which rewrites the credentials next to it (the
        label path's ``pg-credentials`` too). A listing changes nothing: only a change is a rotation."""
        for event in batch:
            if event.type == "MODIFIED" and app_secret(event.object):
                secret = event.object
                self._guarded(f"secret {secret['metadata']['name']}", partial(self._rotated_here, secret))
        if any(event.type == SYNCED for event in batch):
            self.rotations_synced.set()

    def on_health(self, batch: list[Event]) -> None:
        """A request's CNPG Cluster whose readiness and the request's Ready condition disagree (its
        instance went down, or came back) has its request converged at once, which shows it
        (``health.py``). Level-triggered: what a listing shows counts, not only later changes."""
        for event in batch:
            found = (
                event.items if event.type == SYNCED else (event.object,) if event.type != "DELETED" else ()
            )
            for obj in found:
                try:
                    self._health_changed(obj)
                except FleetflowError as exc:  # the request's cluster: its own watch says why
                    log.warning("%s: health of %s: %s", self.cluster, obj["metadata"]["name"], exc)
        if any(event.type == SYNCED for event in batch):
            self.health_synced.set()

    def _rotated_here(self, secret: dict[str, Any]) -> None:
        self._rotated(self._client(), secret)

    def _guarded(self, what: str, call: Callable[[], None]) -> None:
        """A handler's permanent failure is logged, not raised: it must not end the cluster's
        watch. A transient one is raised: the watch relists after a backoff (what the listing
        shows is looked at again)."""
        try:
            call()
        except TemporaryError:
            raise
        except FleetflowError as exc:
            log.warning("%s: %s: %s", self.cluster, what, " ".join(str(exc).split()))

    def _health_changed(self, cnpg: dict[str, Any]) -> None:
        request = CnpgCluster.of(cnpg).request
        if not request:
            return
        ref = RequestRef.parse(request)
        obj = self.registry.client(ref.cluster).get_or_none(
            crd.API_VERSION, crd.KIND, ref.name, ref.namespace
        )
        if obj is None or not health.disagree(cnpg, obj):
            return
        meta = Meta.of(cnpg)
        event = events.FleetEvent(
            events.DATABASE_REQUEST_CHANGED,
            events.request_resource(ref.cluster, ref.namespace, ref.name),
            events.event_id(meta.uid, "health", meta.resource_version),
            {"request": request, "cluster": ref.cluster, "health": health.summary(cnpg)},
        )
        self.emit([event])
        log.info("emitted %s for %s: its CNPG Cluster is %s", event.event, request, health.summary(cnpg))

    def _rotated(self, client: KubeClient, secret: dict[str, Any]) -> None:
        meta = Meta.of(secret)
        name = meta.labels.get("cnpg.io/cluster")
        if not name:
            return
        try:
            owner = client.get_or_none(CNPG_API, "Cluster", name, meta.namespace)
        except APINotFoundError:
            return  # no CloudNativePG here
        if owner is None:
            return
        request = CnpgCluster.of(owner).request
        if not request:
            return  # not made by fleetflow
        ref = RequestRef.parse(request)
        event = events.FleetEvent(
            events.DATABASE_REQUEST_CHANGED,
            events.request_resource(ref.cluster, ref.namespace, ref.name),
            events.event_id(meta.uid, "rotated", meta.resource_version),
            {"request": request, "cluster": ref.cluster, "rotated": f"{meta.namespace}/{meta.name}"},
        )
        self.emit([event])
        log.info("emitted %s for %s: secret %s/%s changed", event.event, request, meta.namespace, meta.name)

    def emit(self, batch: list[events.FleetEvent]) -> None:
        """Send until accepted (or stopped): a rotation or a health change is seen once by its
        watch, so giving up on a Prefect server that is down would lose it (the relist that
        followed does not show it again); a request's event waited up to 30 s more."""
        events.emit_until_accepted(self._send, batch, self.stop)

    def _client(self) -> KubeClient:
        return self.registry.client(self.cluster)


class RequestWatcher:
    """One :class:`ClusterWatch` per registered cluster, following the registry (itself an
    informer on the FleetClusters of the management cluster)."""

    def __init__(self, registry: Registry, emit: Emit = events.emit_many, watch_timeout: int = WATCH_TIMEOUT):
        self.registry, self.emit, self.watch_timeout = registry, emit, watch_timeout
        self.watches: dict[str, ClusterWatch] = {}
        self.aliases: set[str] = set()  # names left out, said once each (not at every relist)
        self.registered: set[str] = set()
        self._lock = threading.Lock()

    def _unaliased(self, names: set[str]) -> set[str]:
        """One name per API server (:func:`inventory.unaliased`), saying which it left out."""
        kept = set(inventory.unaliased(self.registry, names))
        for name in sorted(names - kept - self.aliases):
            log.warning(
                "%s is an API server registered first under another name: its requests are served "
                "under that name, once",
                name,
            )
        self.aliases = names - kept
        return kept

    def _follow(self, names: set[str]) -> None:
        names = self._unaliased(names)
        with self._lock:
            for name in sorted(set(self.watches) - names):
                self.watches.pop(name).stop.set()
                log.info("stopped watching Database requests in %s (deregistered)", name)
            for name in sorted(names - set(self.watches)):
                watch = ClusterWatch(self.registry, name, self.emit, self.watch_timeout)
                self.watches[name] = watch
                watch.start()
                log.info("watching Database requests in %s", name)

    def on_registry(self, batch: list[Event]) -> None:
        """The registered names, from a listing and each registration and deregistration."""
        for event in batch:
            if event.type == SYNCED:
                self.registered = {obj["metadata"]["name"] for obj in event.items}
            elif event.type == "ADDED":
                self.registered.add(event.name)
            elif event.type == "DELETED":
                self.registered.discard(event.name)
        try:
            self._follow(set(self.registered))
        except TemporaryError:
            raise  # the management cluster went away: relisted after a backoff
        except FleetflowError as exc:  # an alias check could not use a kubeconfig: next change
            log.warning("registry: %s", " ".join(str(exc).split()))

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Follow the registry until ``stop`` is set; ``ready`` once every cluster was listed."""
        informer = Informer(self.registry.mgmt, API_VERSION, KIND, watch_timeout=self.watch_timeout)
        registry = hub().watch(informer, self.on_registry, name="registry", stop=stop)
        try:
            if ready is not None and registry.synced.wait(60):
                with self._lock:
                    watches = list(self.watches.values())
                for watch in watches:
                    watch.synced.wait(60)
                ready.set()
            stop.wait()
        finally:
            registry.stop()
            with self._lock:
                for watch in self.watches.values():
                    watch.stop.set()
        registry.join()
