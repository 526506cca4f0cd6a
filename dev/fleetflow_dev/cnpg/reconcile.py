"""One Cluster's reconcile: what CloudNativePG would write for it, read live and compared first.

:class:`Reconciler` brings one ``postgresql.cnpg.io/v1`` Cluster and what it owns in line
with CloudNativePG's contract (the controller module's docstring says what that is); the
controller decides when, from its watch and work queue. No password reaches a log line, an
exception or a status message: every error text is redacted against the passwords in play.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fleetflow.errors import (
    APIConflictError,
    APINotFoundError,
    FleetError,
    FleetflowError,
    TemporaryError,
    UsageError,
)
from fleetflow.kube import KubeClient
from fleetflow_dev.cnpg import contract
from fleetflow_dev.cnpg.contract import API_VERSION, FINALIZER, KIND, ClusterSpec
from fleetflow_dev.cnpg.databases import Databases

log = logging.getLogger("fleetflow.cnpg")

Key = tuple[str, str, str]  # (service cluster, namespace, name)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _redact(text: str, hidden: list[str]) -> str:
    for secret in hidden:
        if secret:
            text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class _Done:
    """What was in place after the last complete reconcile of a Cluster."""

    uid: str
    generation: int
    port: int


class Reconciler:
    """Reconciles single Clusters of the service clusters in ``clients`` (a shared, live mapping)."""

    def __init__(self, clients: Mapping[str, KubeClient], databases: Mapping[str, Databases]) -> None:
        self.clients = clients
        self.databases = databases
        self._done: dict[Key, _Done] = {}
        self._locks: dict[Key, threading.RLock] = {}
        self._guard = threading.Lock()

    def reconcile(self, service_cluster: str, namespace: str, name: str, *, force: bool = False) -> None:
        """Bring one Cluster (read live) and what it owns in line with CloudNativePG's contract.

        Without ``force`` a Cluster whose generation, uid and server port are those of the last
        complete reconcile, and which is healthy, is left alone. Errors that concern the
        Cluster are reported in its status, then raised (redacted) for the caller to retry.
        """
        key = (service_cluster, namespace, name)
        client = self.clients[service_cluster]
        with self.lock(key):
            obj = client.get_or_none(API_VERSION, KIND, name, namespace)
            if obj is None:
                self.forget(service_cluster, namespace, name, None)
                return
            meta = obj["metadata"]
            if meta.get("deletionTimestamp"):
                self._finalize(client, service_cluster, obj)
                return
            if not force and self._in_place(service_cluster, obj):
                return
            if self.databases[service_cluster].held.is_set():
                return  # its server died and waits for its restart, which reconciles every Cluster
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

    def forget(self, service_cluster: str, namespace: str, name: str, uid: str | None) -> None:
        """The Cluster is gone: so are its role and database (if ``uid``'s, when given)."""
        with self.lock((service_cluster, namespace, name)):
            with self._guard:
                self._done.pop((service_cluster, namespace, name), None)
            if self.databases[service_cluster].drop(namespace, name, uid):
                log.info(
                    "cnpg stand-in: Cluster %s/%s on %s: role and database dropped",
                    namespace,
                    name,
                    service_cluster,
                )

    @contextlib.contextmanager
    def lock(self, key: Key) -> Iterator[None]:
        """At most one reconcile of a Cluster at a time, whoever calls."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.RLock())
        with lock:
            yield

    # -- parts -----------------------------------------------------------------------------

    def _in_place(self, service_cluster: str, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        key = (service_cluster, meta["namespace"], meta["name"])
        with self._guard:
            done = self._done.get(key)
        if done is None or FINALIZER not in (meta.get("finalizers") or []) or not contract.is_ready(obj):
            return False
        if (done.uid, done.generation) != (meta["uid"], int(meta.get("generation") or 0)):
            return False
        return self.databases[service_cluster].port() == done.port

    def _ensure(
        self,
        client: KubeClient,
        service_cluster: str,
        obj: dict[str, Any],
        spec: ClusterSpec,
        hidden: list[str],
    ) -> int:
        if (obj.get("status") or {}).get("phase") not in (contract.PHASE_HEALTHY, contract.PHASE_WAITING):
            self._write_status(client, obj, contract.PHASE_SETTING_UP)  # (a restart keeps saying waiting)
        wanted = self._wanted_password(client, spec)
        if wanted:
            hidden.append(wanted)
        password, port = self.databases[service_cluster].ensure(spec, wanted)
        hidden.append(password)
        if spec.user_secret is None:
            client.apply(contract.app_secret(obj, spec, password, port))
        self._ensure_services(client, obj, spec, port)
        self._write_status(client, obj, contract.PHASE_HEALTHY)
        return port

    def _wanted_password(self, client: KubeClient, spec: ClusterSpec) -> str | None:
        """The owner's password: the user's initdb secret's, else the existing ``-app`` secret's, or None."""
        if spec.user_secret is None:
            existing = client.get_or_none("v1", "Secret", spec.app_secret_name, spec.namespace)
            return contract.decode(existing, "password")  # CloudNativePG never regenerates it
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
        """The Cluster is being deleted: drop its role and database, then let it go."""
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if FINALIZER not in (meta.get("finalizers") or []):
            return
        self.forget(service_cluster, namespace, name, meta["uid"])
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
