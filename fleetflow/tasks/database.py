"""Tasks of provision-database: place, apply and wait, announce.

Few, coarse tasks: every task run costs the Prefect server three state events, and under a
burst of a hundred requests that load is what delays the automations. Each task is idempotent
(a server-side apply, a watch), so retrying a whole task is safe.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from fleetflow import events
from fleetflow.dbaas import deprovision, placement, provision
from fleetflow.registry import connect
from fleetflow.tasks.policy import OUTAGE_RETRIES, api_task_options


@task(name="place-database", **api_task_options())
def place_database(cluster: str, mgmt_context: str | None) -> str:
    """Choose the service cluster and hand a retained (orphaned) database back to its cluster."""
    registry = connect(mgmt_context)
    service_cluster = placement.choose_service_cluster(registry, cluster)
    deprovision.readopt(registry, cluster)
    return service_cluster


@task(name="apply-database", **api_task_options(retries=OUTAGE_RETRIES))
def apply_database(
    service_cluster: str,
    cluster: str,
    instances: int,
    template_dir: str | None,
    timeout_seconds: float,
    mgmt_context: str | None,
) -> tuple[provision.Database, str]:
    """Render and server-side apply the CNPG Cluster, then watch until it is usable; returns it
    and its endpoint. A template error fails at once (only a TemporaryError is retried); the
    service cluster's API server restarting is ridden out (by the wait, else by the retries)."""
    body = provision.render_cluster(cluster, instances, Path(template_dir) if template_dir else None)
    service = connect(mgmt_context).client(service_cluster)
    db = provision.apply_cluster(service, body, service_cluster, cluster)
    return db, str(provision.wait_ready(service, db, timeout_seconds))


@task(name="announce-database-ready", **api_task_options())
def announce_database_ready(db: provision.Database, endpoint: str, mgmt_context: str | None) -> None:
    """Emit ``fleetflow.database.ready``; its id changes only with the Cluster (uid/generation)."""
    live = (
        connect(mgmt_context)
        .client(db.service_cluster)
        .get(provision.CNPG_API, "Cluster", db.name, db.namespace)
    )
    version = f"{live['metadata']['uid']}/{live['metadata']['generation']}"
    events.emit(
        events.FleetEvent(
            events.DATABASE_READY,
            events.database_resource(db.cluster, db.service_cluster),
            events.event_id(db.cluster, db.service_cluster, "database-ready", version),
            {
                "cluster": db.cluster,
                "service_cluster": db.service_cluster,
                "namespace": db.namespace,
                "name": db.name,
                "endpoint": endpoint,
            },
        )
    )


@task(name="deprovision-database", **api_task_options())
def deprovision_database(cluster: str, policy: str, mgmt_context: str | None) -> str:
    return deprovision.deprovision(
        connect(mgmt_context), cluster, "Delete" if policy == "Delete" else "Retain"
    )
