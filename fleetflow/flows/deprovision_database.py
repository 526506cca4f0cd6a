"""deprovision-database: apply the deletion policy when a cluster stops asking for a database."""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger

from fleetflow.tasks.database import deprovision_database as deprovision_task


@flow(name="deprovision-database", validate_parameters=True)
def deprovision_database(
    cluster: str, deletion_policy: Literal["Retain", "Delete"] = "Retain", mgmt_context: str | None = None
) -> str:
    """Retain (default: data kept, marked orphaned) or Delete the database of CLUSTER.

    Args:
        cluster: the registered cluster that no longer has postgres=required.
        deletion_policy: Retain keeps the database and its data; Delete removes both and withdraws
            the delivered credentials.
        mgmt_context: the management cluster's context (default: fleetflow's configuration).
    """
    outcome = deprovision_task(cluster, deletion_policy, mgmt_context)
    get_run_logger().info("%s: %s", cluster, outcome)
    return outcome
