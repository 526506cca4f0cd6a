"""Every Database request of the fleet as rows: where it is, whether it is ready and why not.

One list call per registered cluster (the Database CRD's objects in all namespaces). A cluster
without the CRD has no requests; a cluster that cannot be read is one row saying why, never
dropped. No row carries a secret: only the Secret's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleetflow.databases import crd, status
from fleetflow.databases.spec import RequestRef
from fleetflow.databases.views import DatabaseObject
from fleetflow.errors import APINotFoundError, FleetflowError
from fleetflow.registry import ClusterRecord, Registry


@dataclass(frozen=True)
class RequestRow:
    request: str  # CLUSTER/NAMESPACE/NAME, or CLUSTER/*/* for a cluster that could not be read
    ready: str  # True, False or Unknown
    phase: str
    reason: str
    message: str
    service_cluster: str
    endpoint: str
    secret: str  # NAMESPACE/NAME of the credentials Secret
    database: str

    @classmethod
    def of(cls, cluster: str, obj: dict[str, Any]) -> RequestRow:
        db = DatabaseObject.of(obj)
        ref = db.served_as(cluster)
        st = db.status
        return cls(
            request=str(ref),
            ready=st.ready.status,
            phase=status.DELETING if db.meta.deleting else st.phase or "Pending",
            reason=st.ready.reason,
            message=st.ready.message,
            service_cluster=st.service_cluster,
            endpoint=f"{st.host}:{st.port}" if st.host else "",
            secret=f"{ref.namespace}/{db.secret_name}",
            database=st.database or str(db.spec.get("database", "app")),
        )


def rows(registry: Registry, clusters: list[str] | None = None) -> list[RequestRow]:
    found: list[RequestRow] = []
    for name in clusters if clusters is not None else [r.name for r in registry.list()]:
        try:
            items, _ = registry.client(name).list(crd.API_VERSION, crd.KIND)
        except APINotFoundError:
            continue  # no Database CRD there: no requests
        except FleetflowError as exc:
            why = " ".join(str(exc).split())
            found.append(RequestRow(f"{name}/*/*", "Unknown", "Unknown", "Unreachable", why, "", "", "", ""))
            continue
        found.extend(RequestRow.of(name, obj) for obj in items)
    return sorted(found, key=lambda r: r.request)


FINAL_REASONS = frozenset({"InvalidSpec", "ImmutableField"})  # retrying cannot change these


def unaliased(registry: Registry, names: list[str] | set[str]) -> list[str]:
    """One name per API server: a cluster registered under two names would otherwise have each of
    its Database requests served twice, under two names (two CNPG Clusters, in two namespaces).
    The serving name is stable: a registration whose last probe failed gives way to one that
    works (its credentials may be the broken part); then the one registered first, so that a
    later alias never takes a served request over; then the first name."""
    return sorted(_by_server(registry, names).values())


def serving_name(registry: Registry, name: str) -> str:
    """The registered name that serves the requests of ``name``'s API server: ``name`` itself
    unless that server is registered under another name that :func:`unaliased` keeps."""
    records = registry.list()
    server = _server(registry, name)
    for other in _ordered(records, [r.name for r in records]):
        if other == name or _server(registry, other) == server:
            return other
    return name  # not registered (any more): its own reads fail with their reason


def _ordered(records: list[ClusterRecord], names: list[str] | set[str]) -> list[str]:
    failed = {r.name for r in records if r.ready is False}
    created = {r.name: r.created for r in records}
    return sorted(names, key=lambda n: (n in failed, created.get(n, ""), n))


def _server(registry: Registry, name: str) -> str:
    try:
        return registry.kubeconfig(name).server
    except FleetflowError:
        return f"unknown:{name}"  # reading it fails on its own, with its reason


def _by_server(registry: Registry, names: list[str] | set[str]) -> dict[str, str]:
    by_server: dict[str, str] = {}
    for name in _ordered(registry.list(), names):
        by_server.setdefault(_server(registry, name), name)
    return by_server


def to_reconcile(registry: Registry) -> list[str]:
    """Every request reconcile should converge: all of them (a converge of a ready request
    writes nothing, and it is how a rotated password or a deleted Secret is noticed), except
    those failed for a reason only their owner can fix, at the generation that failed, and the
    databases of cluster labels (each cluster's own repair converges its label's, or releases
    it when the label is gone). Clusters that cannot be read are left to their own repair row."""
    wanted: list[str] = []
    for name in unaliased(registry, [r.name for r in registry.list()]):
        try:
            items, _ = registry.client(name).list(crd.API_VERSION, crd.KIND)
        except FleetflowError:
            continue
        for obj in items:
            db = DatabaseObject.of(obj)
            ready = db.status.ready
            stuck = ready.status == "False" and ready.reason in FINAL_REASONS
            if db.from_cluster_label or (
                stuck and db.status.observed_generation == db.meta.generation and not db.meta.deleting
            ):
                continue
            wanted.append(str(RequestRef.of(name, obj)))
    return sorted(wanted)
