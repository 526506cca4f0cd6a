"""What ``fleetflow show databases`` prints: one row per cluster that asked for a database.

Never a password: only where the database is, its phase, its address and where credentials
have been delivered.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetflow.dbaas import credentials, provision
from fleetflow.dbaas.deprovision import is_orphaned
from fleetflow.dbaas.names import APP_NAMESPACE, CNPG_API, SERVICE_CLUSTER_ANNOTATION
from fleetflow.errors import FleetflowError
from fleetflow.registry import Registry


@dataclass(frozen=True)
class DatabaseRow:
    cluster: str
    service_cluster: str
    phase: str
    endpoint: str
    credentials: str  # "mgmt", "workload", "mgmt,workload" or "no"


def rows(registry: Registry) -> list[DatabaseRow]:
    result = []
    for record in registry.list():
        service_cluster = record.annotations.get(SERVICE_CLUSTER_ANNOTATION)
        if not service_cluster and record.labels.get("postgres") != "required":
            continue
        phase, endpoint, where = "Not provisioned", "", []
        if service_cluster:
            db = provision.database_of(record.name, service_cluster)
            try:
                service = registry.client(service_cluster)
                phase = provision.phase(service, db)
                live = service.get_or_none(CNPG_API, "Cluster", db.name, db.namespace)
                if is_orphaned(live):
                    phase = f"Orphaned, retained ({phase})"
                found = provision.load_balancer(service, db)[1]
                endpoint = str(found) if found else ""
            except FleetflowError as exc:
                phase = f"Unknown ({type(exc).__name__})"
        if credentials.delivered_source(registry.mgmt, record.name):
            where.append("mgmt")
        try:
            if credentials.delivered_source(registry.client(record.name), APP_NAMESPACE):
                where.append("workload")
        except FleetflowError:
            pass
        result.append(
            DatabaseRow(record.name, service_cluster or "", phase, endpoint, ",".join(where) or "no")
        )
    return result
