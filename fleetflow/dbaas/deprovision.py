"""What happens to a database when its cluster no longer asks for one (label ``postgres`` removed).

No data is ever deleted by default. The deletion policy decides:

- ``Retain`` (default): the CNPG Cluster and its data stay; the Cluster is annotated
  ``fleetflow.io/orphaned`` (with the time it was orphaned; a Cluster already marked is left
  untouched) and ``fleetflow show databases`` reports it as orphaned. Labelling
  the cluster ``postgres=required`` again adopts the same database back.
- ``Delete``: the CNPG Cluster is deleted (CNPG then deletes its data) and the credentials
  fleetflow delivered are withdrawn from the management and workload clusters. If the workload
  cluster cannot be reached, the run fails saying so (an unreachable cluster is a temporary
  error, retried) and keeps the placement, so that the next run withdraws what is left.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from fleetflow.dbaas import credentials, placement, provision
from fleetflow.dbaas.names import APP_NAMESPACE, CNPG_API, SERVICE_CLUSTER_ANNOTATION
from fleetflow.errors import APIError, FleetflowError
from fleetflow.registry import Registry

ORPHANED_ANNOTATION = "fleetflow.io/orphaned"
Policy = Literal["Retain", "Delete"]


def deprovision(registry: Registry, cluster: str, policy: Policy) -> str:
    """Apply ``policy`` to ``cluster``'s database; returns what was done, in words."""
    record = registry.get(cluster)
    if record is not None and record.labels.get("postgres") == "required":
        return "still requested (postgres=required): nothing to do"
    service_cluster = placement.recorded_service_cluster(registry, cluster) if record else None
    if service_cluster is None:
        return "no database: nothing to do"
    db = provision.database_of(cluster, service_cluster)
    service = registry.client(service_cluster)
    if policy == "Retain":
        live = service.get_or_none(CNPG_API, "Cluster", db.name, db.namespace)
        if live is None:
            return "no database: nothing to do"
        if is_orphaned(live):
            # Marked by an earlier run: re-stamping would write every retained Cluster on every
            # reconcile and label event, and move the mark's time away from the orphaning.
            return f"already retained {db.namespace}/{db.name} on {service_cluster} (orphaned, data kept)"
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        service.merge_patch(
            CNPG_API,
            "Cluster",
            db.name,
            db.namespace,
            {"metadata": {"annotations": {ORPHANED_ANNOTATION: when}}},
        )
        return f"retained {db.namespace}/{db.name} on {service_cluster} (orphaned, data kept)"
    service.delete(CNPG_API, "Cluster", db.name, db.namespace)  # idempotent: gone either way
    done = f"deleted {db.namespace}/{db.name} on {service_cluster}"
    from_mgmt = credentials.withdraw(registry.mgmt, cluster)
    try:
        from_workload = credentials.withdraw(registry.client(cluster), APP_NAMESPACE)
    except FleetflowError as exc:
        # Say what was done and what was not. The placement stays recorded, so a retry (or the
        # next run) finishes the job; the error keeps its class: unreachable stays temporary.
        raise _with_message(
            exc,
            f"{done}, but could not withdraw its credentials from {cluster}: {' '.join(str(exc).split())}",
        ) from None
    registry.annotate(cluster, {SERVICE_CLUSTER_ANNOTATION: None})
    withdrawn = [w for w, gone in (("the management cluster", from_mgmt), (cluster, from_workload)) if gone]
    return f"{done}; " + (
        f"withdrew its credentials from {' and '.join(withdrawn)}"
        if withdrawn
        else "no delivered credentials to withdraw"
    )


def _with_message(exc: FleetflowError, message: str) -> FleetflowError:
    if isinstance(exc, APIError):
        return type(exc)(message, status=exc.status, reason=exc.reason)
    return type(exc)(message)


def readopt(registry: Registry, cluster: str) -> None:
    """A cluster asking again gets its retained database back: clear the orphan mark.

    Only while it asks (``postgres=required``): a provision run queued before the label was
    removed, and running after it, must not un-orphan the database.
    """
    record = registry.get(cluster)
    if record is None or record.labels.get("postgres") != "required":
        return
    service_cluster = placement.recorded_service_cluster(registry, cluster)
    if service_cluster is None:
        return
    db = provision.database_of(cluster, service_cluster)
    service = registry.client(service_cluster)
    live = service.get_or_none(CNPG_API, "Cluster", db.name, db.namespace)
    if live and ORPHANED_ANNOTATION in (live["metadata"].get("annotations") or {}):
        service.merge_patch(
            CNPG_API,
            "Cluster",
            db.name,
            db.namespace,
            {"metadata": {"annotations": {ORPHANED_ANNOTATION: None}}},
        )


def is_orphaned(obj: dict[str, object] | None) -> bool:
    meta = (obj or {}).get("metadata")
    return isinstance(meta, dict) and ORPHANED_ANNOTATION in (meta.get("annotations") or {})
