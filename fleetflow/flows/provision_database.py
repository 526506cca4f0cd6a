"""provision-database: a CloudNativePG Cluster on a service cluster for a requesting cluster.

Once the database is usable, the same run delivers its credentials (the fetch-credentials step,
as one task) before it announces ``fleetflow.database.ready``: credentials arrive the moment the
database is ready, without waiting for another flow run to be created and started, and "ready"
is never announced before the credentials exist. The fetch-credentials flow stays for the UI,
the CLI and repairs (a rotation, a deleted Secret).
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from fleetflow.tasks.credentials import deliver_credentials
from fleetflow.tasks.database import announce_database_ready, apply_database, place_database


@flow(name="provision-database", validate_parameters=True)
def provision_database(
    cluster: str,
    instances: int = 3,
    timeout_seconds: float = 300.0,
    template_dir: str | None = None,
    mgmt_context: str | None = None,
    deliver_to: Literal["mgmt", "workload"] | None = None,
) -> dict[str, Any]:
    """Provision (idempotently) the database of registered cluster CLUSTER, wait until it is usable,
    and deliver its credentials.

    Args:
        cluster: the registered cluster that needs a database.
        instances: PostgreSQL instances of the CNPG Cluster.
        timeout_seconds: how long to wait for the database to be healthy, its secret and its address.
        template_dir: a directory of templates overriding the defaults.
        mgmt_context: the management cluster's context (default: fleetflow's configuration).
        deliver_to: where the credentials go, "mgmt" or "workload" (default: where they went
            last time, else "mgmt"; see fetch-credentials).
    """
    logger = get_run_logger()
    service_cluster = place_database(cluster, mgmt_context)
    db, endpoint = apply_database(
        service_cluster, cluster, instances, template_dir, timeout_seconds, mgmt_context
    )
    delivered = deliver_credentials(cluster, deliver_to, mgmt_context)
    announce_database_ready(db, endpoint, mgmt_context)
    logger.info(
        "database %s/%s for %s is ready on %s at %s; credentials %s %s",
        db.namespace,
        db.name,
        cluster,
        service_cluster,
        endpoint,
        "written to" if delivered["changed"] else "already current in",
        delivered["target"],
    )
    return {
        "cluster": cluster,
        "service_cluster": service_cluster,
        "namespace": db.namespace,
        "name": db.name,
        "endpoint": endpoint,
        "credentials": delivered["target"],
    }
