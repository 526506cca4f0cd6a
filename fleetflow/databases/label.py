"""The label path as a Database request: ``postgres=required`` on cluster C is the Database
``fleetflow/C`` on C (named after the registered cluster: two names registered for one API
server each have their own, as each has its own label).

:func:`request` server-side applies that object (labelled ``fleetflow.io/requested-by:
cluster-label``, in namespace ``fleetflow``, which fleetflow owns), so ``kubectl get databases
-A`` on C lists it with its READY state like any request; the same converge as every request's
then makes it true. Its CNPG Cluster keeps the seed's name, ``cluster-C`` in namespace C of the
service cluster. Besides the Secret ``C-credentials`` next to the object (written as for any
request, so an app can read it as any request's), converge delivers the seed's
``pg-credentials`` and ``pg-loadbalancer-data`` (:mod:`.delivery`).

:func:`release` is the label's removal: the object is deleted and finalised by the same code
as any request's deletion (:mod:`.finalise`), with the platform's deletion policy.
"""

from __future__ import annotations

from typing import Any

from fleetflow.databases import converge, crd, provision
from fleetflow.databases.names import (
    CLUSTER_LABEL,
    LABEL_NAMESPACE,
    MANAGED,
    REQUESTED_BY,
    SERVICE_CLUSTER_ANNOTATION,
)
from fleetflow.databases.spec import DatabaseSpec, RequestRef, label_ref
from fleetflow.databases.status import Outcome
from fleetflow.databases.views import DatabaseObject
from fleetflow.errors import APINotFoundError
from fleetflow.registry import ClusterRecord, Registry

DATABASE = "todo"  # the seed's database name (its Job creates its table there)
CRD_API = "apiextensions.k8s.io/v1"


def requested(record: ClusterRecord | None) -> bool:
    return record is not None and record.labels.get("postgres") == "required"


def manifest(cluster: str, instances: int, deletion_policy: str) -> dict[str, Any]:
    ref = label_ref(cluster)
    wanted = DatabaseSpec(database=DATABASE, instances=instances, deletion_policy=deletion_policy)
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {
            "name": ref.name,
            "namespace": ref.namespace,
            "labels": {**MANAGED, REQUESTED_BY: CLUSTER_LABEL},
        },
        "spec": wanted.to_spec(),
    }


def request(
    registry: Registry, record: ClusterRecord, instances: int, deletion_policy: str
) -> RequestRef | None:
    """Apply the label's Database on the cluster of ``record``; None when its labels do not ask
    (the label went between the event and this run: there is nothing to provision)."""
    if not requested(record):
        return None
    client = registry.client(record.name)
    if client.get_or_none(CRD_API, "CustomResourceDefinition", crd.CRD_NAME) is None:
        crd.install(client)
    if client.get_or_none("v1", "Namespace", LABEL_NAMESPACE) is None:
        namespace = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": LABEL_NAMESPACE, "labels": MANAGED},
        }
        client.apply(namespace)
    ref, body = label_ref(record.name), manifest(record.name, instances, deletion_policy)
    live = client.get_or_none(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)
    if live is None or not provision.contains(live, body):  # an unchanged request costs no write
        client.apply(body, force=True)
    return ref


def release(registry: Registry, record: ClusterRecord | None, cluster: str, deletion_policy: str) -> Outcome:
    """The label is gone: delete the label's Database with ``deletion_policy`` and finalise it."""
    ref = label_ref(cluster)
    if record is None:
        return Outcome(str(ref), "Absent", "not registered: nothing to do")
    if requested(record):
        return Outcome(str(ref), "Ready", "still requested (postgres=required): nothing to do")
    workload = registry.client(cluster)
    try:
        obj = workload.get_or_none(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)
    except APINotFoundError:
        obj = None  # no Database CRD there: no label database either
    if obj is None:
        return Outcome(str(ref), "Absent", _left_behind(registry, record, ref))
    db = DatabaseObject.of(obj)
    if not db.meta.deleting:
        if db.deletion_policy != deletion_policy:
            policy = {"spec": {"deletionPolicy": deletion_policy}}
            workload.merge_patch(crd.API_VERSION, crd.KIND, ref.name, ref.namespace, policy)
        workload.delete(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)
    return converge.converge(registry, ref)


def _left_behind(registry: Registry, record: ClusterRecord, ref: RequestRef) -> str:
    """What an earlier release left: a retained database, or nothing."""
    service_cluster = record.annotations.get(SERVICE_CLUSTER_ANNOTATION)
    if not service_cluster or registry.get(service_cluster) is None:
        return "no database: nothing to do"
    placed = provision.Placed.of(ref, service_cluster)
    live = provision.get(registry.client(service_cluster), placed)
    if live is None:
        return "no database: nothing to do"
    state = "orphaned, data kept" if live.orphaned else "data kept"
    return f"already retained CloudNativePG Cluster {placed} on {service_cluster} ({state})"
