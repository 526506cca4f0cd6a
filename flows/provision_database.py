"""provision-database: a CloudNativePG Cluster on a service cluster for a requesting cluster."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from tasks.database import (
    announce_database_ready,
    apply_database,
    choose_service_cluster,
    database_version,
    readopt_database,
    render_database,
    wait_database_ready,
)


@flow(name="provision-database", validate_parameters=True)
def provision_database(
    cluster: str,
    instances: int = 3,
    timeout_seconds: float = 300.0,
    template_dir: str | None = None,
    mgmt_context: str | None = None,
) -> dict[str, Any]:
    """Provision (idempotently) the database of registered cluster CLUSTER and wait until it is usable.

    Args:
        cluster: the registered cluster that needs a database.
        instances: PostgreSQL instances of the CNPG Cluster.
        timeout_seconds: how long to wait for the database to be healthy, its secret and its address.
        template_dir: a directory of templates overriding the defaults.
        mgmt_context: the management cluster's context (default: fleetflow's configuration).
    """
    logger = get_run_logger()
    service_cluster = choose_service_cluster(cluster, mgmt_context)
    readopt_database(cluster, mgmt_context)
    body = render_database(cluster, instances, template_dir)
    db = apply_database(service_cluster, body, cluster, mgmt_context)
    endpoint = wait_database_ready(db, timeout_seconds, mgmt_context)
    announce_database_ready(db, endpoint, database_version(db, mgmt_context))
    logger.info(
        "database %s/%s for %s is ready on %s at %s",
        db.namespace,
        db.name,
        cluster,
        service_cluster,
        endpoint,
    )
    return {
        "cluster": cluster,
        "service_cluster": service_cluster,
        "namespace": db.namespace,
        "name": db.name,
        "endpoint": endpoint,
    }
