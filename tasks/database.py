"""Tasks of provision-database: place, render, apply, wait, announce."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from fleetflow import events
from fleetflow.dbaas import deprovision, placement, provision
from fleetflow.registry import connect
from tasks.policy import api_task_options


@task(name="choose-service-cluster", **api_task_options())
def choose_service_cluster(cluster: str, mgmt_context: str | None) -> str:
    return placement.choose_service_cluster(connect(mgmt_context), cluster)


@task(name="apply-database", **api_task_options())
def apply_database(
    service_cluster: str, cluster: str, instances: int, template_dir: str | None, mgmt_context: str | None
) -> provision.Database:
    """Render and server-side apply the CNPG Cluster. A template error fails at once (only a
    TemporaryError is retried: retrying cannot fix a template)."""
    body = provision.render_cluster(cluster, instances, Path(template_dir) if template_dir else None)
    service = connect(mgmt_context).client(service_cluster)
    return provision.apply_cluster(service, body, service_cluster, cluster)


@task(name="wait-database-ready", **api_task_options())
def wait_database_ready(db: provision.Database, timeout_seconds: float, mgmt_context: str | None) -> str:
    endpoint = provision.wait_ready(connect(mgmt_context).client(db.service_cluster), db, timeout_seconds)
    return str(endpoint)


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


@task(name="readopt-database", **api_task_options())
def readopt_database(cluster: str, mgmt_context: str | None) -> None:
    deprovision.readopt(connect(mgmt_context), cluster)
