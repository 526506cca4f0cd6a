"""What ``fleetflow show databases`` prints: one row per cluster whose label asked for a database.

(Every Database request, the label's included, is listed by ``fleetflow db list``:
:mod:`.inventory`.) A row reads the label's database where the FleetCluster records it.

Never a password: only where the database is, its phase, its address and where credentials
have been delivered. A read that fails is shown in its row, with its reason, never dropped:
``Unknown: <reason>`` as the phase, ``<target> unknown: <reason>`` among the credentials.
:func:`build_row` turns what was read into the row; :func:`rows` does the reading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fleetflow.databases import provision
from fleetflow.databases.delivery import delivered_source
from fleetflow.databases.names import APP_NAMESPACE, SERVICE_CLUSTER_ANNOTATION
from fleetflow.databases.spec import label_ref
from fleetflow.errors import FleetflowError
from fleetflow.registry import ClusterRecord, Registry

T = TypeVar("T")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class DatabaseRow:
    cluster: str
    service_cluster: str
    phase: str  # CNPG's phase, "Not provisioned", "Orphaned, retained (<phase>)" or "Unknown: <reason>"
    endpoint: str
    credentials: str  # "mgmt", "workload", "mgmt,workload" or "no"; "<target> unknown: <reason>" if unread

    @property
    def complete(self) -> bool:
        """False when something in this row could not be read (its reason is in the row)."""
        return not self.phase.startswith("Unknown:") and f"{UNKNOWN}:" not in self.credentials


@dataclass(frozen=True)
class Database:
    """What was read of a placed database on its service cluster."""

    phase: str
    orphaned: bool
    endpoint: str


def requests_database(record: ClusterRecord) -> bool:
    """A cluster is listed while it asks for a database or has one placed (even if orphaned)."""
    return (
        bool(record.annotations.get(SERVICE_CLUSTER_ANNOTATION))
        or record.labels.get("postgres") == "required"
    )


def reason(exc: BaseException) -> str:
    """An error as one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def build_row(
    cluster: str,
    service_cluster: str | None,
    database: Database | FleetflowError | None,
    in_mgmt: bool | FleetflowError,
    in_workload: bool | FleetflowError,
) -> DatabaseRow:
    """The row for ``cluster``: ``database`` is None when none is placed; an error stands for a
    read that failed, and its reason is shown where the value would be."""
    if database is None:
        phase, endpoint = "Not provisioned", ""
    elif isinstance(database, FleetflowError):
        phase, endpoint = f"Unknown: {reason(database)}", ""
    else:
        phase = f"Orphaned, retained ({database.phase})" if database.orphaned else database.phase
        endpoint = database.endpoint
    known, unknown = [], []
    for target, found in (("mgmt", in_mgmt), ("workload", in_workload)):
        if isinstance(found, FleetflowError):
            unknown.append(f"{target} {UNKNOWN}: {reason(found)}")
        elif found:
            known.append(target)
    delivered = ",".join(known) or ("no" if not unknown else "")
    shown = "; ".join(filter(None, [delivered, *unknown]))
    return DatabaseRow(cluster, service_cluster or "", phase, endpoint, shown)


def _read(read: Callable[[], T]) -> T | FleetflowError:
    try:
        return read()
    except FleetflowError as exc:
        return exc


def _database(registry: Registry, cluster: str, service_cluster: str) -> Database:
    placed = provision.Placed.of(label_ref(cluster), service_cluster)
    service = registry.client(service_cluster)
    live = provision.get(service, placed)
    if live is None:
        return Database("Absent", False, "")
    lb = provision.load_balancer(service, placed)
    found = lb.endpoint if lb is not None else None
    return Database(live.phase or "Pending", live.orphaned, str(found) if found else "")


def _row(registry: Registry, record: ClusterRecord) -> DatabaseRow:
    name = record.name
    service_cluster = record.annotations.get(SERVICE_CLUSTER_ANNOTATION)
    in_mgmt = _read(lambda: bool(delivered_source(registry.mgmt, name)))
    if not service_cluster:
        # Nothing placed, nothing delivered to the workload cluster: fleetflow delivers there only
        # after placing a database, and withdraws before it forgets the placement.
        return build_row(name, None, None, in_mgmt, False)
    return build_row(
        name,
        service_cluster,
        _read(lambda: _database(registry, name, service_cluster)),
        in_mgmt,
        _read(lambda: bool(delivered_source(registry.client(name), APP_NAMESPACE))),
    )


def rows(registry: Registry) -> list[DatabaseRow]:
    return [_row(registry, record) for record in registry.list() if requests_database(record)]
