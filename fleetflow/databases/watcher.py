"""The request watcher: Database objects in every registered cluster become Prefect events.

One watch per registered cluster, each in a thread of its own; clusters are added and removed
as they register and deregister (a watch of the registry's FleetClusters). A request needs work
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
the credentials next to the request follow within seconds, not at the next reconcile. The
``-app`` secret of a label-path database (the CNPG Cluster ``cluster-<C>`` in namespace ``<C>``,
placed for registered cluster ``<C>`` on this server) emits ``fleetflow.credentials.rotated``
for ``<C>``, with its labels, which runs fetch-credentials (the policy table's row). Both ids are
made of the secret's uid and resourceVersion: a relist or restart repeats them, never a new one.

A third watch follows the CNPG Clusters there: when a request's Cluster stops being ready (its
instance died) while the request says Ready, or is ready again while the request says it is
unavailable, the request's event is emitted (id: the Cluster's uid and resourceVersion), and
the flow's converge shows it: Ready=False/Unavailable, credentials untouched, then Ready.

A cluster registered without the register-cluster flow (a FleetCluster applied by GitOps) gets
the Database CRD from its watch on first sync, so its teams can apply requests. A cluster whose
API cannot be reached backs off and relists, without holding up the others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from fleetflow import events
from fleetflow.databases import crd, health, inventory, status
from fleetflow.databases.converge import REQUEST
from fleetflow.databases.spec import RequestRef
from fleetflow.dbaas.names import CNPG_API, SERVICE_CLUSTER_ANNOTATION, cnpg_cluster_name
from fleetflow.errors import APIGoneError, APINotFoundError, FleetflowError, PermanentError, TemporaryError
from fleetflow.kube import KubeClient
from fleetflow.registry import API_VERSION, KIND, Registry

log = logging.getLogger("fleetflow.databases.watcher")

WATCH_TIMEOUT = 30
# CloudNativePG's secrets of a Cluster; its application-user ones are picked by :func:`app_secret`.
CNPG_SECRETS = "cnpg.io/cluster"
BACKOFF_MAX = 30.0
NOT_SERVED_MAX = 10.0  # how late a service cluster's new CloudNativePG is noticed, at most
Emit = Callable[[list[events.FleetEvent]], None]


def needs_work(obj: dict[str, Any]) -> bool:
    meta = obj["metadata"]
    if meta.get("deletionTimestamp"):
        return crd.FINALIZER in (meta.get("finalizers") or [])
    return crd.FINALIZER not in (meta.get("finalizers") or []) or not status.converged(obj)


def app_secret(secret: dict[str, Any]) -> bool:
    """Whether a secret of a CNPG Cluster is its application user's ``<cluster>-app``.

    CloudNativePG labels it ``cnpg.io/userType=app`` only from 1.25 on; v1.24.1 (the seed's
    operator) gives it ``cnpg.io/cluster`` and ``cnpg.io/reload`` alone, so without that label
    the name decides.
    """
    labels = secret["metadata"].get("labels") or {}
    if "cnpg.io/userType" in labels:
        return bool(labels["cnpg.io/userType"] == "app")
    cluster = labels.get("cnpg.io/cluster")
    return bool(cluster) and secret["metadata"].get("name") == f"{cluster}-app"


def event_for(cluster: str, obj: dict[str, Any]) -> events.FleetEvent:
    """The event for this state of the request; the same state always gives the same id."""
    meta = obj["metadata"]
    ref = RequestRef.of(cluster, obj)
    deleting = "deleting" if meta.get("deletionTimestamp") else "present"
    return events.FleetEvent(
        events.DATABASE_REQUEST_CHANGED,
        events.request_resource(ref.cluster, ref.namespace, ref.name),
        # The registered name is part of the id: two registrations of one server (while the
        # watcher switches between them) must not make the server drop one as a duplicate.
        events.event_id(cluster, meta["uid"], "request", str(meta.get("generation", 0)), deleting),
        {"request": str(ref), "cluster": ref.cluster, "generation": meta.get("generation", 0)},
    )


class ClusterWatch:
    """The Database watch of one cluster, until ``stop`` is set."""

    def __init__(self, registry: Registry, cluster: str, emit: Emit, watch_timeout: int) -> None:
        self.registry, self.cluster, self.watch_timeout = registry, cluster, watch_timeout
        self._send = emit
        self.stop = threading.Event()
        self.synced = threading.Event()
        self.rotations_synced = threading.Event()  # the secrets are listed: changes from now on are seen
        self.thread = threading.Thread(target=self.run, name=f"requests-{cluster}", daemon=True)
        self.rotations = threading.Thread(
            target=self.watch_rotations, name=f"rotations-{cluster}", daemon=True
        )
        self.health_synced = threading.Event()  # the CNPG Clusters are listed
        self.health = threading.Thread(target=self.watch_health, name=f"health-{cluster}", daemon=True)

    def run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                version = self._resync()
                self.synced.set()
                while not self.stop.is_set():
                    version = self._watch(version)
                backoff = 0.5
            except APIGoneError:
                continue
            except (TemporaryError, PermanentError) as exc:
                log.warning("%s: %s; relisting in %.1fs", self.cluster, " ".join(str(exc).split()), backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def watch_rotations(self) -> None:
        """This cluster as a service cluster: when the ``-app`` Secret of a CNPG Cluster changes
        (a rotated password), the request it was made for is converged again at once, which
        rewrites the credentials next to it; a label-path database's are delivered again."""

        def changed(client: KubeClient, kind: str, obj: dict[str, Any]) -> None:
            if kind == "MODIFIED" and app_secret(obj):
                self._rotated(client, obj)

        self._follow("secrets", "v1", "Secret", CNPG_SECRETS, self.rotations_synced, changed)

    def watch_health(self) -> None:
        """This cluster as a service cluster: a request's CNPG Cluster whose readiness and the
        request's Ready condition disagree (its instance went down, or came back) has its
        request converged at once, which shows it (``health.py``)."""

        def changed(client: KubeClient, kind: str, obj: dict[str, Any]) -> None:
            if kind in ("ADDED", "MODIFIED"):
                try:
                    self._health_changed(obj)
                except FleetflowError as exc:  # the request's cluster: its own watch says why
                    log.warning("%s: health of %s: %s", self.cluster, obj["metadata"]["name"], exc)

        self._follow("CNPG Clusters", CNPG_API, "Cluster", None, self.health_synced, changed)

    def _follow(
        self,
        what: str,
        api_version: str,
        kind: str,
        selector: str | None,
        synced: threading.Event,
        handle: Callable[[KubeClient, str, dict[str, Any]], None],
    ) -> None:
        """List, then watch ``kind`` here until ``stop``, passing each listed object (as ADDED)
        and each event to ``handle``; a cluster without the kind (not, or not yet, a service
        cluster: its operator is being installed) is looked at again with backoff."""
        backoff = 0.5
        while not self.stop.is_set():
            try:
                client = self._client()
                items, version = client.list(api_version, kind, label_selector=selector)
                for obj in items:  # level-triggered: what changed before the watch counts too
                    handle(client, "ADDED", obj)
                synced.set()
                backoff = 0.5
                while not self.stop.is_set():
                    for event, obj in client.stream(
                        api_version,
                        kind,
                        resource_version=version,
                        timeout=self.watch_timeout,
                        label_selector=selector,
                    ):
                        version = obj["metadata"].get("resourceVersion", version)
                        if event != "BOOKMARK":
                            handle(client, event, obj)
                        if self.stop.is_set():
                            break
                backoff = 0.5
            except APIGoneError:
                continue
            except APINotFoundError:
                log.debug("%s: no %s here (yet); looking again in %.1fs", self.cluster, what, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, NOT_SERVED_MAX)
            except FleetflowError as exc:
                log.warning(
                    "%s: %s: %s; relisting in %.1fs", self.cluster, what, " ".join(str(exc).split()), backoff
                )
                self.stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _health_changed(self, cnpg: dict[str, Any]) -> None:
        request = (cnpg["metadata"].get("annotations") or {}).get(REQUEST)
        if not request:
            return
        ref = RequestRef.parse(request)
        obj = self.registry.client(ref.cluster).get_or_none(
            crd.API_VERSION, crd.KIND, ref.name, ref.namespace
        )
        if obj is None or not health.disagree(cnpg, obj):
            return
        meta = cnpg["metadata"]
        event = events.FleetEvent(
            events.DATABASE_REQUEST_CHANGED,
            events.request_resource(ref.cluster, ref.namespace, ref.name),
            events.event_id(meta["uid"], "health", meta.get("resourceVersion", "")),
            {"request": request, "cluster": ref.cluster, "health": health.summary(cnpg)},
        )
        self.emit([event])
        log.info("emitted %s for %s: its CNPG Cluster is %s", event.event, request, health.summary(cnpg))

    def _rotated(self, client: KubeClient, secret: dict[str, Any]) -> None:
        meta = secret["metadata"]
        name = (meta.get("labels") or {}).get("cnpg.io/cluster")
        if not name:
            return
        try:
            owner = client.get_or_none(CNPG_API, "Cluster", name, meta["namespace"])
        except APINotFoundError:
            return  # no CloudNativePG here
        if owner is None:
            return
        request = (owner["metadata"].get("annotations") or {}).get(REQUEST)
        if not request:
            self._rotated_label_path(secret, name)
            return
        ref = RequestRef.parse(request)
        event = events.FleetEvent(
            events.DATABASE_REQUEST_CHANGED,
            events.request_resource(ref.cluster, ref.namespace, ref.name),
            events.event_id(meta["uid"], "rotated", meta.get("resourceVersion", "")),
            {"request": request, "cluster": ref.cluster, "rotated": f"{meta['namespace']}/{meta['name']}"},
        )
        self.emit([event])
        log.info(
            "emitted %s for %s: secret %s/%s changed", event.event, request, meta["namespace"], meta["name"]
        )

    def _rotated_label_path(self, secret: dict[str, Any], name: str) -> None:
        """The secret of registered cluster C's database (``cluster-C`` in namespace C), if it
        is placed on this server: fetch-credentials is asked for C."""
        meta = secret["metadata"]
        cluster = meta["namespace"]
        record = self.registry.get(cluster)
        placed = (record.annotations.get(SERVICE_CLUSTER_ANNOTATION) if record else None) or ""
        if record is None or name != cnpg_cluster_name(cluster) or not self._same_server(placed):
            return
        event = events.FleetEvent(
            events.CREDENTIALS_ROTATED,
            events.database_resource(cluster, placed, record.labels),
            events.event_id(meta["uid"], "credentials-rotated", meta.get("resourceVersion", "")),
            {"cluster": cluster, "service_cluster": placed, "rotated": f"{cluster}/{meta['name']}"},
        )
        self.emit([event])
        log.info("emitted %s for %s: secret %s/%s changed", event.event, cluster, cluster, meta["name"])

    def _same_server(self, name: str) -> bool:
        """Whether registered cluster ``name`` is this watch's API server (maybe under another name)."""
        if name == self.cluster:
            return True
        try:
            return (
                bool(name)
                and self.registry.kubeconfig(name).server == self.registry.kubeconfig(self.cluster).server
            )
        except FleetflowError:
            return False

    def emit(self, batch: list[events.FleetEvent]) -> None:
        """Send until accepted (or stopped): a rotation or a health change is seen once by its
        watch, so giving up on a Prefect server that is down would lose it (the relist that
        followed does not show it again); a request's event waited up to 30 s more."""
        events.emit_until_accepted(self._send, batch, self.stop)

    def _client(self) -> KubeClient:
        return self.registry.client(self.cluster)

    def _resync(self) -> str:
        client = self._client()
        if client.get_or_none("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd.CRD_NAME) is None:
            crd.install(client)  # registered without the flow (GitOps): the cluster gets the CRD here
            log.info("%s: installed the Database CRD", self.cluster)
        items, version = client.list(crd.API_VERSION, crd.KIND)
        pending = [event_for(self.cluster, obj) for obj in items if needs_work(obj)]
        if pending:
            self.emit(pending)
            for event in pending:
                log.info("emitted %s for %s (id %s)", event.event, event.payload["request"], event.id)
        log.info("%s: %d Database request(s), %d need work", self.cluster, len(items), len(pending))
        return version

    def _watch(self, version: str) -> str:
        for kind, obj in self._client().stream(
            crd.API_VERSION, crd.KIND, resource_version=version, timeout=self.watch_timeout
        ):
            if self.stop.is_set():
                break  # stopped (e.g. the name is now an alias): nothing more is sent under it
            version = obj["metadata"].get("resourceVersion", version)
            if kind == "BOOKMARK":
                continue  # carries only a newer resourceVersion
            if kind in ("ADDED", "MODIFIED") and needs_work(obj):
                event = event_for(self.cluster, obj)
                self.emit([event])
                log.info("emitted %s for %s (id %s)", event.event, event.payload["request"], event.id)
        return version


class RequestWatcher:
    """One :class:`ClusterWatch` per registered cluster, following the registry."""

    def __init__(self, registry: Registry, emit: Emit = events.emit_many, watch_timeout: int = WATCH_TIMEOUT):
        self.registry, self.emit, self.watch_timeout = registry, emit, watch_timeout
        self.watches: dict[str, ClusterWatch] = {}
        self.aliases: set[str] = set()  # names left out, said once each (not at every relist)

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
        for name in sorted(set(self.watches) - names):
            self.watches.pop(name).stop.set()
            log.info("stopped watching Database requests in %s (deregistered)", name)
        for name in sorted(names - set(self.watches)):
            watch = ClusterWatch(self.registry, name, self.emit, self.watch_timeout)
            self.watches[name] = watch
            watch.thread.start()
            watch.rotations.start()
            watch.health.start()
            log.info("watching Database requests in %s", name)

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Follow the registry until ``stop`` is set; ``ready`` once every cluster was listed."""
        backoff = 0.5
        try:
            while not stop.is_set():
                try:
                    items, version = self.registry.mgmt.list(API_VERSION, KIND)
                    self._follow({obj["metadata"]["name"] for obj in items})
                    if ready is not None and not ready.is_set():
                        for watch in self.watches.values():
                            watch.synced.wait(60)
                        ready.set()
                    for kind, _obj in self.registry.mgmt.stream(
                        API_VERSION, KIND, resource_version=version, timeout=self.watch_timeout
                    ):
                        if kind == "BOOKMARK":
                            continue  # carries only a newer resourceVersion
                        if kind in ("ADDED", "DELETED"):
                            items, _ = self.registry.mgmt.list(API_VERSION, KIND)
                            self._follow({o["metadata"]["name"] for o in items})
                        if stop.is_set():
                            break
                    backoff = 0.5
                except APIGoneError:
                    continue
                except FleetflowError as exc:
                    log.warning("registry: %s; relisting in %.1fs", " ".join(str(exc).split()), backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            for watch in self.watches.values():
                watch.stop.set()
