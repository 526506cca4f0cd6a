"""provision-database: the database a cluster's ``postgres=required`` label asks for.

The label stands for a Database request on the cluster (``fleetflow/<cluster>``): the run applies
it, then converges it with the same task as database-request (placement, the CloudNativePG
Cluster, the wait until usable, its status), which also delivers the seed's ``pg-credentials``
and ``pg-loadbalancer-data``, and only then announces ``fleetflow.database.ready``: credentials
arrive the moment the database is ready, and "ready" is never announced before they exist.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from fleetflow.errors import PermanentError
from fleetflow.tasks.database import announce_database_ready, request_label_database
from fleetflow.tasks.databases import converge_request


@flow(name="provision-database", validate_parameters=True)
def provision_database(
    cluster: str,
    instances: int = 3,
    timeout_seconds: float = 300.0,
    template_dir: str | None = None,
    mgmt_context: str | None = None,
    deliver_to: Literal["mgmt", "workload"] | None = None,
    deletion_policy: Literal["Retain", "Delete"] = "Retain",
) -> dict[str, Any]:
    """Provision (idempotently) the database of registered cluster CLUSTER, wait until it is usable,
    and deliver its credentials.

    Args:
        cluster: the registered cluster that needs a database (labelled postgres=required).
        instances: PostgreSQL instances of the CNPG Cluster.
        timeout_seconds: how long to wait for the database to be healthy, its secret and its address.
        template_dir: a directory of templates overriding the defaults.
        mgmt_context: the management cluster's context (default: fleetflow's configuration).
        deliver_to: where the credentials go, "mgmt" or "workload" (default: where they went
            last time, else "mgmt"; see fetch-credentials).
        deletion_policy: the database's deletionPolicy when its label goes: Retain (the data stays,
            orphaned) or Delete.
    """
    logger = get_run_logger()
    request = request_label_database(cluster, instances, deletion_policy, mgmt_context)
    if request is None:
        logger.info("%s is not labelled postgres=required: nothing to provision", cluster)
        return {"cluster": cluster, "request": None}
    outcome = converge_request(request, timeout_seconds, mgmt_context, template_dir, deliver_to)
    if outcome.phase != "Ready":
        raise PermanentError(f"database {request}: {outcome.detail}")
    announce_database_ready(outcome, mgmt_context)
    namespace, _, name = outcome.cnpg_cluster.partition("/")
    logger.info(
        "database %s for %s is ready on %s at %s; credentials %s %s",
        outcome.cnpg_cluster,
        cluster,
        outcome.service_cluster,
        outcome.endpoint,
        "written to" if outcome.published else "already current in",
        outcome.delivered_to,
    )
    return {
        "cluster": cluster,
        "request": request,
        "service_cluster": outcome.service_cluster,
        "namespace": namespace,
        "name": name,
        "endpoint": outcome.endpoint,
        "credentials": outcome.delivered_to,
    }
