"""Make one Database request true: provision, deliver, report; or, once deleted, finalise it.

Every database is a request: one a team applies, and the one a cluster's ``postgres=required``
label stands for (``fleetflow/<cluster>`` on that cluster, see :mod:`.label`). Idempotent from
any state, so that a duplicate event, a retry or a restart only repeats checks:

1. A request being deleted is finalised (:mod:`.finalise`: its ``deletionPolicy``, its
   credentials withdrawn, then its finalizer), so a deletion while fleetflow was down is still
   processed.
2. Otherwise the finalizer is added, the spec checked (a bad one is Ready=False/InvalidSpec,
   nothing created), a service cluster chosen (:mod:`.placement`: stable, recorded in status;
   a retained Cluster of the same request is found and adopted back), and the CNPG Cluster
   server-side applied in namespace ``<cluster>`` of the service cluster under
   :func:`spec.cnpg_name`.
3. Once the Cluster is usable, its credentials go straight from the service cluster into the
   Secret ``secretName`` next to the request (:mod:`.credentials`). The label's database also
   gets the seed's ``pg-credentials`` and ``pg-loadbalancer-data`` (:mod:`.delivery`). Both are
   rewritten only when their source changed, so a rotated password reaches them when its
   ``-app`` Secret's change re-converges the request.

Status is written at each step. :class:`Outcome` says what happened, never a secret.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from fleetflow.databases import crd, credentials, delivery, finalise, inventory, placement, provision, status
from fleetflow.databases.names import CNPG_API, CNPG_CRD, ORPHANED, REQUEST, SERVICE_CLUSTER_ANNOTATION
from fleetflow.databases.spec import DatabaseSpec, RequestRef, label_ref
from fleetflow.databases.status import Outcome
from fleetflow.databases.views import DatabaseObject
from fleetflow.errors import FleetflowError, PermanentError, TemporaryError, UsageError
from fleetflow.kube import KubeClient, WaitTimeoutError
from fleetflow.registry import ClusterRecord, Registry

OPERATOR_WAIT = 120.0  # seconds a request waits for its service cluster's operator to arrive
release_cluster = finalise.release_cluster


def converge(
    registry: Registry,
    ref: RequestRef,
    timeout: float = 300.0,
    *,
    template_dir: Path | None = None,
    deliver_to: str | None = None,
) -> Outcome:
    """Converge ``ref``; ``template_dir`` overrides the CNPG Cluster's template, ``deliver_to``
    where the label path's credentials go (default: where they went last time).

    A request is served under the first registered name of its API server (:mod:`.inventory`),
    except a cluster label's, which is served under the registered cluster it is named after."""
    if ref != label_ref(ref.cluster):
        serving = inventory.serving_name(registry, ref.cluster)
        if serving != ref.cluster:  # a stale event, or a run asked for by hand, under a second name
            return Outcome(str(ref), "Alias", _alias(ref, serving))
    workload = registry.client(ref.cluster)
    obj = workload.get_or_none(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)
    if obj is None:
        return Outcome(str(ref), "Absent", "no such Database (deleted and finalised)")
    db = DatabaseObject.of(obj)
    if db.served_as(ref.cluster) != ref:  # a cluster label's, seen through its API server's first name
        return converge(
            registry, db.served_as(ref.cluster), timeout, template_dir=template_dir, deliver_to=deliver_to
        )
    if db.meta.deleting:
        return finalise.finalise(registry, workload, ref, db)
    if not db.finalized:
        patch = {
            "finalizers": [*db.meta.finalizers, crd.FINALIZER],
            "resourceVersion": db.meta.resource_version,
        }
        db = DatabaseObject.of(
            workload.merge_patch(crd.API_VERSION, crd.KIND, ref.name, ref.namespace, {"metadata": patch})
        )
    try:
        wanted = DatabaseSpec.from_spec(ref.name, db.spec)
    except UsageError as exc:
        return _fail(workload, ref, db, "InvalidSpec", str(exc))
    records = {r.name: r for r in registry.list()}
    try:
        service_cluster = placement.place(
            records.values(),
            ref,
            db.status.service_cluster,
            wanted.service_cluster_selector,
            lambda candidate: _holds(registry, ref, candidate),
        )
    except PermanentError as exc:
        return _fail(workload, ref, db, "NoServiceCluster", str(exc))
    record = records.get(ref.cluster)
    if (
        db.from_cluster_label
        and record
        and record.annotations.get(SERVICE_CLUSTER_ANNOTATION) != service_cluster
    ):
        record = registry.annotate(ref.cluster, {SERVICE_CLUSTER_ANNOTATION: service_cluster})
    placed = provision.Placed.of(ref, service_cluster)
    base = status.Report(
        status.PROVISIONING,
        False,
        "Provisioning",
        f"CloudNativePG Cluster {placed} on {service_cluster}",
        service_cluster=service_cluster,
        cnpg_cluster=str(placed),
        database=wanted.database,
        secret_name=wanted.secret_name,
    )
    if (not db.converged or db.status.ready.status != "True") and db.status.phase != status.UNAVAILABLE:
        status.write(workload, ref, db, base)  # a re-check of a ready (or down) request does not flap
    label = (record, deliver_to) if db.from_cluster_label and record is not None else None
    try:
        return _provision(registry, workload, ref, db, wanted, base, timeout, template_dir, label)
    except TemporaryError as exc:  # the service cluster (or the workload's API) did not answer
        with contextlib.suppress(FleetflowError):
            why = f"service cluster {service_cluster} cannot be reached: {' '.join(str(exc).split())}"
            _fail(workload, ref, db, "Unreachable", why, base)
        raise  # the task retries a transient failure; reconcile tries again later


def _alias(ref: RequestRef, serving: str) -> str:
    return (
        f"{ref.cluster} is an API server registered first as {serving}: "
        f"this request is served as {serving}/{ref.namespace}/{ref.name}, once"
    )


def _holds(registry: Registry, ref: RequestRef, candidate: str) -> bool:
    """Whether ``candidate`` holds ``ref``'s CNPG Cluster (a retained one, to adopt back)."""
    try:
        return provision.get(registry.client(candidate), provision.Placed.of(ref, candidate)) is not None
    except FleetflowError:
        return False  # unreadable: not a place to adopt from


def _provision(
    registry: Registry,
    workload: KubeClient,
    ref: RequestRef,
    db: DatabaseObject,
    wanted: DatabaseSpec,
    base: status.Report,
    timeout: float,
    template_dir: Path | None,
    label: tuple[ClusterRecord, str | None] | None,
) -> Outcome:
    """The CNPG Cluster on the service cluster, awaited; then the credentials and Ready. For
    the label's database (``label``: its cluster's record, where to deliver) the seed's pair too."""
    placed = provision.Placed.of(ref, base.service_cluster)
    service = registry.client(placed.service_cluster)
    live = provision.get(service, placed)
    if live is not None and live.initdb_database and live.initdb_database != wanted.database:
        why = (
            f"spec.database cannot change from {live.initdb_database!r} to {wanted.database!r} "
            "(CloudNativePG creates the database once); delete and re-create the request"
        )
        return _fail(workload, ref, db, "ImmutableField", why, base)
    # A service cluster registered a moment ago may still be getting its operator (its own
    # automation): watch until its CRD is served, as for readiness, before giving up.
    try:
        service.wait_established(
            CNPG_CRD,
            timeout=min(timeout, OPERATOR_WAIT),
            awaiting=f"CloudNativePG's CRD on {placed.service_cluster} to be Established",
        )
    except WaitTimeoutError:
        return _fail(
            workload,
            ref,
            db,
            "NoOperator",
            f"CloudNativePG is not installed on {placed.service_cluster}",
            base,
        )
    if live is not None and not live.healthy and db.status.host:
        _unavailable(workload, ref, db, base, live.summary())  # provisioned before: its instance is down
    provision.apply(service, provision.render(ref, wanted, template_dir))
    if live is not None and live.orphaned:  # a retained database, asked for again: adopted back
        service.merge_patch(
            CNPG_API,
            "Cluster",
            placed.name,
            placed.namespace,
            {"metadata": {"annotations": {ORPHANED: None}}},
        )
    try:
        endpoint = provision.wait_ready(service, placed, timeout)
    except WaitTimeoutError as exc:
        return _fail(workload, ref, db, "Timeout", str(exc), base)
    except PermanentError as exc:
        return _fail(workload, ref, db, "InvalidSpec", str(exc), base)
    creds, _ = credentials.read(service, placed)
    changed = credentials.write(workload, ref, db, wanted.database, creds, endpoint)
    published = delivery.deliver(registry, label[0], creds, endpoint, label[1]) if label else None
    fields = {**base.__dict__, "phase": status.READY, "ready": True, "reason": "Ready"}
    message = f"credentials in Secret {ref.namespace}/{wanted.secret_name}"
    report = status.Report(**{**fields, "message": message, "host": endpoint.host, "port": endpoint.port})
    status.write(workload, ref, _reread(workload, ref, db), report)
    verb = "written to" if changed else "already current in"
    detail = f"{placed.service_cluster} at {endpoint}; credentials {verb} {wanted.secret_name}"
    if published is not None:
        detail += f" and {published.target}"
    where = {
        "service_cluster": placed.service_cluster,
        "cnpg_cluster": str(placed),
        "endpoint": str(endpoint),
    }
    if published is None:
        return Outcome(str(ref), "Ready", detail, **where)
    source = creds.source if published.changed else ""
    return Outcome(str(ref), "Ready", detail, **where, delivered_to=published.target, published=source)


def _unavailable(
    workload: KubeClient, ref: RequestRef, db: DatabaseObject, base: status.Report, summary: str
) -> None:
    """Ready=False/Unavailable while the Cluster is not ready; endpoint and Secret stay as they are."""
    message = (
        f"CloudNativePG Cluster {base.cnpg_cluster} on {base.service_cluster} is "
        f"{summary}; the credentials in {base.secret_name} stay valid"
    )
    changes = {"phase": status.UNAVAILABLE, "reason": status.UNAVAILABLE, "message": message}
    where = {"host": db.status.host, "port": db.status.port}
    status.write(workload, ref, db, status.Report(**{**base.__dict__, **changes, **where}))


def _reread(workload: KubeClient, ref: RequestRef, db: DatabaseObject) -> DatabaseObject:
    live = workload.get_or_none(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)
    return DatabaseObject.of(live) if live is not None else db


def _fail(
    workload: KubeClient,
    ref: RequestRef,
    db: DatabaseObject,
    reason: str,
    message: str,
    base: status.Report | None = None,
) -> Outcome:
    fields = base.__dict__ if base else {}
    changes = {"phase": status.FAILED, "ready": False, "reason": reason, "message": message}
    status.write(workload, ref, _reread(workload, ref, db), status.Report(**{**fields, **changes}))
    return Outcome(str(ref), "Failed", f"{reason}: {message}")


__all__ = ["REQUEST", "Outcome", "TemporaryError", "converge", "release_cluster"]
