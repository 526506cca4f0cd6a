"""``fleetflow db create|list|get|delete``: Database requests from a terminal.

A request is the same object ``kubectl apply -f`` or the webhook API would write; the watcher and
the database-request flow do the rest. ``create --wait`` watches the object's Ready condition
until it is True, or False for a stated reason, within ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
from typing import Any

from fleetflow.cli.output import progress, table
from fleetflow.databases import crd, inventory, store
from fleetflow.databases.spec import RequestRef
from fleetflow.databases.status import ready_of
from fleetflow.errors import FleetflowError, PermanentError
from fleetflow.registry import connect

REF_HELP = "CLUSTER/NAMESPACE/NAME: the Database object in namespace NAMESPACE of registered cluster CLUSTER"


def _mgmt(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mgmt-context", help="management cluster context (default: fleetflow's configuration)"
    )


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
    _mgmt(create)
    create.set_defaults(func=_create)

    ls = verbs.add_parser("list", aliases=["ls"], help="every Database request of every registered cluster")
    _mgmt(ls)
    ls.set_defaults(func=_list)

    get = verbs.add_parser("get", help="one Database request and its status")
    get.add_argument("ref", metavar="CLUSTER/NAMESPACE/NAME", help=REF_HELP)
    _mgmt(get)
    get.set_defaults(func=_get)

    delete = verbs.add_parser("delete", help="delete a Database request (its deletionPolicy decides)")
    delete.add_argument("ref", metavar="CLUSTER/NAMESPACE/NAME", help=REF_HELP)
    _mgmt(delete)
    delete.set_defaults(func=_delete)


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
    registry = connect(args.mgmt_context)
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


def _list(args: argparse.Namespace) -> int:
    rows = inventory.rows(connect(args.mgmt_context))
    if not rows:
        print("No Database requests.")
        return 0
    print(request_table(rows))
    return 0


def request_table(rows: list[inventory.RequestRow]) -> str:
    """Requests as ``fleetflow db list`` and ``fleetflow show databases`` print them."""
    return table(
        ["REQUEST", "READY", "PHASE", "REASON", "SERVICE CLUSTER", "ENDPOINT", "SECRET"],
        [[r.request, r.ready, r.phase, r.reason, r.service_cluster, r.endpoint, r.secret] for r in rows],
    )


def _get(args: argparse.Namespace) -> int:
    ref = RequestRef.parse(args.ref)
    obj = store.get(connect(args.mgmt_context), ref)
    if obj is None:
        raise FleetflowError(f"no Database request {ref}")
    row = inventory.RequestRow.of(ref.cluster, obj)
    spec = obj.get("spec") or {}
    for key, value in (
        ("Request", row.request),
        ("Database", row.database),
        ("Instances", spec.get("instances", 1)),
        ("Storage", spec.get("storage", "1Gi")),
        ("Deletion policy", spec.get("deletionPolicy", "Retain")),
        ("Ready", row.ready),
        ("Phase", row.phase),
        ("Reason", row.reason),
        ("Message", row.message),
        ("Service cluster", row.service_cluster),
        ("Endpoint", row.endpoint),
        ("Secret", row.secret),
    ):
        print(f"{key + ':':<17}{value}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    ref = RequestRef.parse(args.ref)
    if store.delete(connect(args.mgmt_context), ref):
        print(f'database.fleetflow.io "{ref.name}" deleted ({ref}); its deletionPolicy is applied next')
    else:
        print(f"no Database request {ref}: nothing to delete")
    return 0
