"""A deleted Database request: apply its ``deletionPolicy``, withdraw what was delivered, let go.

No data is deleted unless the request says so:

- ``Retain`` (the default): the CNPG Cluster and its data stay, annotated ``fleetflow.io/orphaned``
  with the time it was orphaned (a Cluster already marked is left untouched, so finalising twice
  writes nothing). Making the request again adopts it back (:mod:`.placement` finds it).
- ``Delete``: the CNPG Cluster is deleted, and CloudNativePG deletes its data.

Then the credentials converge delivered are removed: the Secret next to the request and, for
the database of a cluster's ``postgres=required`` label, the seed's ``pg-credentials`` and
``pg-loadbalancer-data`` in the management and the workload cluster. Only then is fleetflow's
finalizer removed, so a deletion while fleetflow was down is still processed. The same code
serves ``kubectl delete database``, the label's removal and deregistration (which keeps the
credentials of a retained database: the app may go on using it).
"""

from __future__ import annotations

import contextlib
import datetime as dt

from fleetflow.databases import crd, delivery, inventory, provision
from fleetflow.databases.names import CNPG_API, ORPHANED, SERVICE_CLUSTER_ANNOTATION
from fleetflow.databases.spec import RequestRef
from fleetflow.databases.status import Outcome
from fleetflow.databases.views import DatabaseObject
from fleetflow.errors import APINotFoundError
from fleetflow.kube import KubeClient
from fleetflow.registry import Registry


def apply_policy(registry: Registry, ref: RequestRef, policy: str, service_cluster: str) -> str:
    """Retain (orphan mark) or Delete the request's CNPG Cluster; says what was done."""
    if not service_cluster or registry.get(service_cluster) is None:
        return "nothing was provisioned"
    placed = provision.Placed.of(ref, service_cluster)
    service = registry.client(service_cluster)
    live = provision.get(service, placed)
    if live is None:
        return "nothing was provisioned"
    where = f"CloudNativePG Cluster {placed} on {service_cluster}"
    if policy == "Delete":
        service.delete(CNPG_API, "Cluster", placed.name, placed.namespace)
        return f"deleted {where} and its data"
    if live.orphaned:
        return f"already retained {where} (orphaned, data kept)"
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    mark = {"metadata": {"annotations": {ORPHANED: when}}}
    service.merge_patch(CNPG_API, "Cluster", placed.name, placed.namespace, mark)
    return f"retained {where} (orphaned, data kept)"


def finalise(
    registry: Registry,
    workload: KubeClient,
    ref: RequestRef,
    db: DatabaseObject,
    *,
    keep_secret: bool = False,
) -> Outcome:
    """Apply the request's deletionPolicy, withdraw its credentials (unless ``keep_secret`` and
    Retain) and then remove fleetflow's finalizer."""
    policy = db.deletion_policy
    done = apply_policy(registry, ref, policy, db.status.service_cluster)
    if keep_secret and policy == "Retain":
        kept = f"Secret {db.secret_name} kept"
    else:
        workload.delete("v1", "Secret", db.secret_name, ref.namespace)
        kept = f"Secret {db.secret_name} removed"
        if db.from_cluster_label:
            withdrawn = delivery.withdraw_everywhere(registry, ref.cluster)
            kept += f"; pg-credentials withdrawn from {' and '.join(withdrawn) or 'nowhere (none delivered)'}"
    if db.from_cluster_label and policy == "Delete" and registry.get(ref.cluster) is not None:
        registry.annotate(ref.cluster, {SERVICE_CLUSTER_ANNOTATION: None})  # no database any more
    finalizers = [f for f in db.meta.finalizers if f != crd.FINALIZER]
    with contextlib.suppress(APINotFoundError):  # already gone: finalised by an earlier run
        workload.merge_patch(
            crd.API_VERSION,
            crd.KIND,
            ref.name,
            ref.namespace,
            {"metadata": {"finalizers": finalizers or None, "resourceVersion": db.meta.resource_version}},
        )
    return Outcome(str(ref), "Deleted", f"{policy}: {done}; {kept}")


def release_cluster(registry: Registry, cluster: str) -> list[Outcome]:
    """A cluster leaving fleetflow (deregistration): every Database request in it gets its
    deletionPolicy applied now, while fleetflow can still reach it, and loses fleetflow's
    finalizer, so the objects can be deleted later without fleetflow. Retain keeps the data and
    the credentials (the app may go on using the database); Delete removes both.
    A second name of an API server releases nothing: the requests stay served by the first."""
    if inventory.serving_name(registry, cluster) != cluster:
        return []
    workload = registry.client(cluster)
    try:
        items, _ = workload.list(crd.API_VERSION, crd.KIND)
    except APINotFoundError:
        return []  # no Database CRD: no requests
    released = []
    for obj in items:
        db = DatabaseObject.of(obj)
        ref = db.served_as(cluster)
        if ref.cluster == cluster:  # not another registered name's label database
            released.append(finalise(registry, workload, ref, db, keep_secret=True))
    return released
