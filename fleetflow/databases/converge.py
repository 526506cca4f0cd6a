"""Make one Database request true: provision, deliver, report; or, once deleted, apply its policy.

Idempotent from any state, so that a duplicate event, a retry or a restart only repeats checks:

1. A request being deleted gets its ``deletionPolicy`` applied (Retain: the CNPG Cluster stays,
   annotated orphaned; Delete: the Cluster goes, with its data), its Secret removed, and only
   then its finalizer, so a deletion while fleetflow was down is still processed.
2. Otherwise the finalizer is added, the spec checked (a bad one is Ready=False/InvalidSpec,
   nothing created), a service cluster chosen (stable: recorded in status), and the CNPG Cluster
   server-side applied in namespace ``<cluster>`` of the service cluster under
   :func:`spec.cnpg_name`. A retained Cluster of the same request is adopted back.
3. Once the Cluster is usable, its credentials go straight from the service cluster into the
   Secret ``secretName`` next to the request, owned by it; they never pass through the
   management cluster. The Secret is rewritten only when the source secret or address changed.

Status is written at each step. :class:`Outcome` says what happened, never a secret.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fleetflow import templating
from fleetflow.databases import crd, health, inventory, spec, status
from fleetflow.databases.spec import DatabaseSpec, RequestRef
from fleetflow.dbaas import credentials, provision
from fleetflow.dbaas.names import CNPG_API, MANAGED, SOURCE_ANNOTATION
from fleetflow.errors import APINotFoundError, FleetflowError, PermanentError, TemporaryError, UsageError
from fleetflow.kube import KubeClient, WaitTimeoutError
from fleetflow.labels import Selector
from fleetflow.registry import Registry

ORPHANED = "fleetflow.io/orphaned"
REQUEST = "fleetflow.io/database-request"
CNPG_CRD = "clusters.postgresql.cnpg.io"
OPERATOR_WAIT = 120.0  # seconds a request waits for its service cluster's operator to arrive


@dataclass(frozen=True)
class Outcome:
    request: str
    phase: str  # Ready, Failed, Deleted, Absent, Alias (served under another name)
    detail: str


def converge(registry: Registry, ref: RequestRef, timeout: float = 300.0) -> Outcome:
    serving = inventory.serving_name(registry, ref.cluster)
    if serving != ref.cluster:  # a stale event, or a run asked for by hand, under a second name
        return Outcome(str(ref), "Alias", _alias(ref, serving))
    workload = registry.client(ref.cluster)
    obj = workload.get_or_none(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)
    if obj is None:
        return Outcome(str(ref), "Absent", "no such Database (deleted and finalised)")
    if obj["metadata"].get("deletionTimestamp"):
        return _finalise(registry, workload, ref, obj)
    if crd.FINALIZER not in (obj["metadata"].get("finalizers") or []):
        finalizers = [*(obj["metadata"].get("finalizers") or []), crd.FINALIZER]
        obj = workload.merge_patch(
            crd.API_VERSION,
            crd.KIND,
            ref.name,
            ref.namespace,
            {"metadata": {"finalizers": finalizers, "resourceVersion": obj["metadata"]["resourceVersion"]}},
        )
    try:
        wanted = DatabaseSpec.from_spec(ref.name, obj.get("spec") or {})
    except UsageError as exc:
        return _fail(workload, ref, obj, "InvalidSpec", str(exc))
    try:
        service_cluster = _place(registry, ref, obj, wanted)
    except PermanentError as exc:
        return _fail(workload, ref, obj, "NoServiceCluster", str(exc))
    name = spec.cnpg_name(ref)
    base = status.Report(
        status.PROVISIONING,
        False,
        "Provisioning",
        f"CloudNativePG Cluster {ref.cluster}/{name} on {service_cluster}",
        service_cluster=service_cluster,
        cnpg_cluster=f"{ref.cluster}/{name}",
        database=wanted.database,
        secret_name=wanted.secret_name,
    )
    shown = (obj.get("status") or {}).get("phase")
    if (not status.converged(obj) or status.ready_of(obj)[0] != "True") and shown != status.UNAVAILABLE:
        status.write(workload, ref, obj, base)  # a re-check of a ready (or down) request does not flap
    try:
        return _provision(registry, workload, ref, obj, wanted, base, timeout)
    except TemporaryError as exc:  # the service cluster (or the workload's API) did not answer
        with contextlib.suppress(FleetflowError):
            why = f"service cluster {service_cluster} cannot be reached: {' '.join(str(exc).split())}"
            _fail(workload, ref, obj, "Unreachable", why, base)
        raise  # the task retries a transient failure; reconcile tries again later


def _alias(ref: RequestRef, serving: str) -> str:
    return (
        f"{ref.cluster} is an API server registered first as {serving}: "
        f"this request is served as {serving}/{ref.namespace}/{ref.name}, once"
    )


def _provision(
    registry: Registry,
    workload: KubeClient,
    ref: RequestRef,
    obj: dict[str, Any],
    wanted: DatabaseSpec,
    base: status.Report,
    timeout: float,
) -> Outcome:
    """The CNPG Cluster on the service cluster, awaited; then the credentials and Ready."""
    service_cluster, name = base.service_cluster, spec.cnpg_name(ref)
    service = registry.client(service_cluster)
    db = provision.Database(ref.cluster, service_cluster, ref.cluster, name)
    live = service.get_or_none(CNPG_API, "Cluster", name, ref.cluster)
    created_as = (((live or {}).get("spec") or {}).get("bootstrap") or {}).get("initdb", {}).get("database")
    if live is not None and created_as and created_as != wanted.database:
        return _fail(
            workload,
            ref,
            obj,
            "ImmutableField",
            f"spec.database cannot change from {created_as!r} to {wanted.database!r} "
            "(CloudNativePG creates the database once); delete and re-create the request",
            base,
        )
    # A service cluster registered a moment ago may still be getting its operator (its own
    # automation): watch until its CRD is served (it exists a moment before that), as for
    # readiness, before giving up. An established CRD answers at once.
    try:
        service.wait_established(
            CNPG_CRD,
            timeout=min(timeout, OPERATOR_WAIT),
            awaiting=f"CloudNativePG's CRD on {service_cluster} to be Established",
        )
    except WaitTimeoutError:
        why = f"CloudNativePG is not installed on {service_cluster}"
        return _fail(workload, ref, obj, "NoOperator", why, base)
    if live is not None and not provision.healthy(live) and (obj.get("status") or {}).get("endpoint"):
        _unavailable(workload, ref, obj, base, live)  # provisioned before: its instance is down
    provision.apply_cluster(service, _render(ref, name, wanted), service_cluster, ref.cluster)
    if live is not None and ORPHANED in (live["metadata"].get("annotations") or {}):
        adopt = {"metadata": {"annotations": {ORPHANED: None}}}
        service.merge_patch(CNPG_API, "Cluster", name, ref.cluster, adopt)
    try:
        endpoint = provision.wait_ready(service, db, timeout)
    except WaitTimeoutError as exc:
        return _fail(workload, ref, obj, "Timeout", str(exc), base)
    except PermanentError as exc:
        return _fail(workload, ref, obj, "InvalidSpec", str(exc), base)
    changed = _deliver(service, workload, db, ref, obj, wanted)
    report = status.Report(
        status.READY,
        True,
        "Ready",
        f"credentials in Secret {ref.namespace}/{wanted.secret_name}",
        service_cluster=service_cluster,
        cnpg_cluster=f"{ref.cluster}/{name}",
        database=wanted.database,
        secret_name=wanted.secret_name,
        host=endpoint.host,
        port=endpoint.port,
    )
    status.write(workload, ref, _reread(workload, ref, obj), report)
    verb = "written to" if changed else "already current in"
    where = f"{service_cluster} at {endpoint}; credentials {verb} {wanted.secret_name}"
    return Outcome(str(ref), "Ready", where)


def _unavailable(
    workload: KubeClient, ref: RequestRef, obj: dict[str, Any], base: status.Report, live: dict[str, Any]
) -> None:
    """Ready=False/Unavailable while the Cluster is not ready; endpoint and Secret stay as they are."""
    endpoint = (obj.get("status") or {}).get("endpoint") or {}
    message = (
        f"CloudNativePG Cluster {base.cnpg_cluster} on {base.service_cluster} is "
        f"{health.summary(live)}; the credentials in {base.secret_name} stay valid"
    )
    changes = {"phase": status.UNAVAILABLE, "reason": status.UNAVAILABLE, "message": message}
    where = {"host": endpoint.get("host", ""), "port": int(endpoint.get("port") or 0)}
    status.write(workload, ref, obj, status.Report(**{**base.__dict__, **changes, **where}))


def _reread(workload: KubeClient, ref: RequestRef, obj: dict[str, Any]) -> dict[str, Any]:
    return workload.get_or_none(crd.API_VERSION, crd.KIND, ref.name, ref.namespace) or obj


def _fail(
    workload: KubeClient,
    ref: RequestRef,
    obj: dict[str, Any],
    reason: str,
    message: str,
    base: status.Report | None = None,
) -> Outcome:
    fields = base.__dict__ if base else {}
    changes = {"phase": status.FAILED, "ready": False, "reason": reason, "message": message}
    report = status.Report(**{**fields, **changes})
    status.write(workload, ref, _reread(workload, ref, obj), report)
    return Outcome(str(ref), "Failed", f"{reason}: {message}")


def _place(registry: Registry, ref: RequestRef, obj: dict[str, Any], wanted: DatabaseSpec) -> str:
    """The service cluster: the one recorded in status while it still qualifies, else a stable
    rendezvous-hash choice among ``type=services`` clusters matching the selector."""
    labels = {"type": "services", **wanted.service_cluster_selector}
    selector = Selector.parse(",".join(f"{k}={v}" for k, v in sorted(labels.items())))
    candidates = sorted(r.name for r in registry.list() if selector.matches(r.labels))
    if not candidates:
        raise PermanentError(f"no registered cluster matches {selector}")
    recorded = (obj.get("status") or {}).get("serviceCluster")
    if recorded in candidates:
        return str(recorded)

    def score(candidate: str) -> int:
        return int.from_bytes(hashlib.sha256(f"{ref}/{candidate}".encode()).digest()[:8], "big")

    return max(candidates, key=score)


def _render(ref: RequestRef, name: str, wanted: DatabaseSpec) -> dict[str, Any]:
    [body] = [
        o
        for o in templating.render(
            "cnpg-cluster.yaml.j2",
            {
                "cluster": ref.cluster,
                "name": name,
                "instances": wanted.instances,
                "database": wanted.database,
                "owner": wanted.owner,
                "storage_size": wanted.storage,
                "service_name": f"{name}-lb",
            },
        )
        if o.get("kind") == "Cluster"
    ]
    body["metadata"].setdefault("annotations", {})[REQUEST] = str(ref)
    return body


def _deliver(
    service: KubeClient,
    workload: KubeClient,
    db: provision.Database,
    ref: RequestRef,
    obj: dict[str, Any],
    wanted: DatabaseSpec,
) -> bool:
    """Write the credentials Secret next to the request; False when it is already current."""
    creds, endpoint = credentials.read(service, db)
    source = f"{creds.source}@{endpoint}"
    current = workload.get_or_none("v1", "Secret", wanted.secret_name, ref.namespace)
    if current and (current["metadata"].get("annotations") or {}).get(SOURCE_ANNOTATION) == source:
        return False
    dbname = creds.dbname or wanted.database
    login = f"{quote(creds.user, safe='')}:{quote(creds.password, safe='')}"
    uri = f"postgresql://{login}@{endpoint.host}:{endpoint.port}/{dbname}"
    data = {
        "username": creds.user,
        "user": creds.user,
        "password": creds.password,
        "host": endpoint.host,
        "port": str(endpoint.port),
        "dbname": dbname,
        "uri": uri,
    }
    workload.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/basic-auth",
            "metadata": {
                "name": wanted.secret_name,
                "namespace": ref.namespace,
                "labels": {**MANAGED, "fleetflow.io/database": ref.name},
                "annotations": {SOURCE_ANNOTATION: source},
                "ownerReferences": [
                    {
                        "apiVersion": crd.API_VERSION,
                        "kind": crd.KIND,
                        "name": ref.name,
                        "uid": obj["metadata"]["uid"],
                        "blockOwnerDeletion": False,
                    }
                ],
            },
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
        force=True,
    )
    return True


def _finalise(
    registry: Registry,
    workload: KubeClient,
    ref: RequestRef,
    obj: dict[str, Any],
    *,
    keep_secret: bool = False,
) -> Outcome:
    """Apply the request's deletionPolicy, remove its Secret (unless ``keep_secret``: the app may
    go on using a retained database) and then fleetflow's finalizer."""
    policy = ((obj.get("spec") or {}).get("deletionPolicy")) or "Retain"
    recorded = (obj.get("status") or {}).get("serviceCluster")
    name = spec.cnpg_name(ref)
    done = "nothing was provisioned"
    if recorded and registry.get(recorded) is not None:
        service = registry.client(recorded)
        if service.get_or_none(CNPG_API, "Cluster", name, ref.cluster) is not None:
            where = f"CloudNativePG Cluster {ref.cluster}/{name} on {recorded}"
            if policy == "Delete":
                service.delete(CNPG_API, "Cluster", name, ref.cluster)
                done = f"deleted {where} and its data"
            else:
                when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                mark = {"metadata": {"annotations": {ORPHANED: when}}}
                service.merge_patch(CNPG_API, "Cluster", name, ref.cluster, mark)
                done = f"retained {where} (orphaned, data kept)"
    secret = ((obj.get("spec") or {}).get("secretName")) or f"{ref.name}-credentials"
    if keep_secret and policy == "Retain":
        kept = f"Secret {secret} kept"
    else:
        workload.delete("v1", "Secret", secret, ref.namespace)
        kept = f"Secret {secret} removed"
    finalizers = [f for f in obj["metadata"].get("finalizers") or [] if f != crd.FINALIZER]
    version = obj["metadata"]["resourceVersion"]
    with contextlib.suppress(APINotFoundError):  # already gone: finalised by an earlier run
        workload.merge_patch(
            crd.API_VERSION,
            crd.KIND,
            ref.name,
            ref.namespace,
            {"metadata": {"finalizers": finalizers or None, "resourceVersion": version}},
        )
    return Outcome(str(ref), "Deleted", f"{policy}: {done}; {kept}")


def release_cluster(registry: Registry, cluster: str) -> list[Outcome]:
    """A cluster leaving fleetflow (deregistration): every Database request in it gets its
    deletionPolicy applied now, while fleetflow can still reach it, and loses fleetflow's
    finalizer, so the objects can be deleted later without fleetflow. Retain keeps the data and
    the credentials Secret (the app may go on using the database); Delete removes both.
    A second name of an API server releases nothing: the requests stay served by the first."""
    serving = inventory.serving_name(registry, cluster)
    if serving != cluster:  # its requests are served, and stay served, under the other name
        return []
    workload = registry.client(cluster)
    try:
        items, _ = workload.list(crd.API_VERSION, crd.KIND)
    except APINotFoundError:
        return []  # no Database CRD: no requests
    return [
        _finalise(registry, workload, RequestRef.of(cluster, obj), obj, keep_secret=True) for obj in items
    ]


__all__ = ["Outcome", "TemporaryError", "converge"]
