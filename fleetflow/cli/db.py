"""``fleetflow db create|list|get|delete``: Database requests from a terminal.

A request is the same object ``kubectl apply -f`` or the webhook API would write; the watcher and
the database-request flow do the rest. ``create --wait`` watches the object's Ready condition
until it is True, or False for a stated reason, within ``--timeout`` seconds. ``list`` and
``get`` print a table, or with ``-o json|yaml`` each request as an object to script against:
where it is, its spec, its phase and Ready condition, where it is served, and the name of the
Secret holding its credentials (never the credentials). A request that does not exist is an
error: ``get`` and ``delete`` of one exit 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fleetflow.cli import options
from fleetflow.cli.output import (
    JSON,
    YAML,
    Column,
    add_output_option,
    progress,
    render_list,
    render_object,
    table,
)
from fleetflow.databases import crd, inventory, store
from fleetflow.databases.spec import RequestRef
from fleetflow.databases.status import ready_of
from fleetflow.errors import APINotFoundError, FleetflowError, PermanentError
from fleetflow.registry import Registry, connect

UNREAD = ("Unknown", "Unknown", "Unreachable")  # a row's ready, phase and reason for an unread cluster
REF_HELP = "CLUSTER/NAMESPACE/NAME: the Database object in namespace NAMESPACE of registered cluster CLUSTER"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="create, list, get and delete Database requests (per app or namespace)")
    verbs = db.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    create = verbs.add_parser("create", help="create or update a Database request (idempotent)")
    create.add_argument("ref", metavar="CLUSTER/NAMESPACE/NAME", help=REF_HELP)
    create.add_argument("--database", help="database name (default app); fixed once created")
    create.add_argument("--owner", help="owning role (default: the database name)")
    create.add_argument("--instances", type=int, help="PostgreSQL instances, 1 to 9 (default 1)")
    create.add_argument("--storage", help="volume size per instance, e.g. 1Gi (default 1Gi)")
    create.add_argument("--deletion-policy", choices=["Retain", "Delete"], help="on delete (default Retain)")
    create.add_argument("--secret-name", help="Secret for the credentials (default NAME-credentials)")
    create.add_argument("--wait", action="store_true", help="wait until Ready (or failed, with the reason)")
    create.add_argument("--timeout", type=float, default=300.0, help="seconds to wait with --wait")
    options.add_cluster_options(create)
    create.set_defaults(func=_create)

    ls = verbs.add_parser("list", aliases=["ls"], help="every Database request of every registered cluster")
    add_output_option(ls)
    options.add_cluster_options(ls)
    ls.set_defaults(func=_list)

    get = verbs.add_parser("get", help="one Database request and its status")
    get.add_argument("ref", metavar="CLUSTER/NAMESPACE/NAME", help=REF_HELP)
    add_output_option(get)
    options.add_cluster_options(get)
    get.set_defaults(func=_get)

    delete = verbs.add_parser("delete", help="delete a Database request (its deletionPolicy decides)")
    delete.add_argument("ref", metavar="CLUSTER/NAMESPACE/NAME", help=REF_HELP)
    options.add_cluster_options(delete)
    delete.set_defaults(func=_delete)


def _connect(args: argparse.Namespace) -> Registry:
    return connect(args.mgmt_context, args.kubeconfig)


def database_object(cluster: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A Database request as ``-o json|yaml`` prints it."""
    ref = RequestRef.of(cluster, obj)
    row = inventory.RequestRow.of(cluster, obj)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    endpoint = status.get("endpoint") or {}
    return {
        "kind": "Database",
        "cluster": ref.cluster,
        "namespace": ref.namespace,
        "name": ref.name,
        "database": row.database,
        "instances": spec.get("instances", 1),
        "storage": spec.get("storage", "1Gi"),
        "deletionPolicy": spec.get("deletionPolicy", "Retain"),
        "phase": row.phase,
        "ready": row.ready == "True",
        "reason": row.reason,
        "message": row.message,
        "serviceCluster": row.service_cluster,
        "endpoint": {"host": endpoint["host"], "port": endpoint.get("port")}
        if endpoint.get("host")
        else None,
        "secretName": row.secret.partition("/")[2],
    }


def _create(args: argparse.Namespace) -> int:
    ref = RequestRef.parse(args.ref)
    spec = store.parse_spec(
        ref.name,
        {
            "database": args.database,
            "owner": args.owner,
            "instances": args.instances,
            "storage": args.storage,
            "deletionPolicy": args.deletion_policy,
            "secretName": args.secret_name,
        },
    )
    registry = _connect(args)
    _, changed = store.apply(registry, ref, spec)
    print(f"database.fleetflow.io/{ref.name} {'configured' if changed else 'unchanged'} ({ref})")
    if not args.wait:
        return 0
    progress(f"waiting up to {args.timeout:.0f}s for {ref} to be Ready")
    client = registry.client(ref.cluster)

    def settled(obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        status, reason, _ = ready_of(obj)
        observed = (obj.get("status") or {}).get("observedGeneration")
        decided = status == "True" or (status == "False" and reason != "Provisioning")
        return observed == obj["metadata"].get("generation") and decided

    live = client.wait(
        crd.API_VERSION,
        crd.KIND,
        ref.name,
        ref.namespace,
        settled,
        timeout=args.timeout,
        awaiting=f"Database {ref} to be Ready",
    )
    status, reason, message = ready_of(live or {})
    if status != "True":
        raise PermanentError(f"{ref}: not ready: {reason}: {message}")
    row = inventory.RequestRow.of(ref.cluster, live or {})
    print(f"{ref} ready on {row.service_cluster} at {row.endpoint}; credentials in Secret {row.secret}")
    return 0


REQUEST_COLUMNS: list[Column[inventory.RequestRow]] = [
    Column("REQUEST", lambda r: r.request),
    Column("READY", lambda r: r.ready),
    Column("PHASE", lambda r: r.phase),
    Column("REASON", lambda r: r.reason),
    Column("SERVICE CLUSTER", lambda r: r.service_cluster),
    Column("ENDPOINT", lambda r: r.endpoint),
    Column("SECRET", lambda r: r.secret),
    Column("DATABASE", lambda r: r.database, wide=True),
    Column("MESSAGE", lambda r: r.message, wide=True),
]


def request_table(rows: list[inventory.RequestRow]) -> str:
    """Requests as ``fleetflow db list`` and ``fleetflow show databases`` print them."""
    return table(
        [c.header for c in REQUEST_COLUMNS if not c.wide],
        [[c.value(r) for c in REQUEST_COLUMNS if not c.wide] for r in rows],
    )


def read_requests(
    registry: Registry,
) -> tuple[list[tuple[str, dict[str, Any]]], list[inventory.RequestRow]]:
    """Every Database object of every registered cluster, with its cluster's name; and a row saying
    why for each cluster that could not be read. A cluster without the Database CRD has none."""
    found: list[tuple[str, dict[str, Any]]] = []
    unread: list[inventory.RequestRow] = []
    for record in registry.list():
        try:
            items, _ = registry.client(record.name).list(crd.API_VERSION, crd.KIND)
        except APINotFoundError:
            continue
        except FleetflowError as exc:
            why = " ".join(str(exc).split())
            unread.append(inventory.RequestRow(f"{record.name}/*/*", *UNREAD, why, *[""] * 4))
            continue
        found.extend((record.name, obj) for obj in items)
    return found, unread


def _list(args: argparse.Namespace) -> int:
    """Every request the registered clusters hold. A cluster that cannot be read is a row saying
    why in the table (left out of JSON and YAML), and the exit code is 1, as kubectl's when it
    printed what it could read."""
    found, unread = read_requests(_connect(args))
    objects = {str(RequestRef.of(cluster, obj)): (cluster, obj) for cluster, obj in found}
    rows = [inventory.RequestRow.of(cluster, obj) for cluster, obj in found]
    if args.output not in (JSON, YAML):
        rows += unread
    print(
        render_list(
            sorted(rows, key=lambda r: r.request),
            args.output,
            REQUEST_COLUMNS,
            lambda r: database_object(*objects[r.request]),
            "No Database requests.",
        )
    )
    if unread:
        names = ", ".join(r.request.split("/")[0] for r in unread)
        print(f"error: could not read the Database requests of {names}", file=sys.stderr)
        return 1
    return 0


def _get(args: argparse.Namespace) -> int:
    ref = RequestRef.parse(args.ref)
    obj = store.get(_connect(args), ref)
    if obj is None:
        raise FleetflowError(f"Database request {ref} not found")
    row = inventory.RequestRow.of(ref.cluster, obj)
    shown = database_object(ref.cluster, obj)
    fields: list[tuple[str, object]] = [
        ("Request", row.request),
        ("Database", row.database),
        ("Instances", shown["instances"]),
        ("Storage", shown["storage"]),
        ("Deletion policy", shown["deletionPolicy"]),
        ("Ready", row.ready),
        ("Phase", row.phase),
        ("Reason", row.reason),
        ("Message", row.message),
        ("Service cluster", row.service_cluster),
        ("Endpoint", row.endpoint),
        ("Secret", row.secret),
    ]
    print(render_object(shown, args.output, fields))
    return 0


def _delete(args: argparse.Namespace) -> int:
    ref = RequestRef.parse(args.ref)
    if not store.delete(_connect(args), ref):
        raise FleetflowError(f"Database request {ref} not found: nothing deleted")
    print(f'database.fleetflow.io "{ref.name}" deleted ({ref}); its deletionPolicy is applied next')
    return 0
