"""deprovision-database: a cluster no longer asks for a database (label ``postgres`` removed).

Its label's Database request is deleted and finalised by the same code as any request's
deletion: the deletion policy applies (Retain: the CNPG Cluster and its data stay, marked
orphaned, and labelling the cluster again adopts them back; Delete: both go), and the delivered
``pg-credentials`` and ``pg-loadbalancer-data`` are withdrawn.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger

from fleetflow.tasks.database import release_label_database


@flow(name="deprovision-database", validate_parameters=True)
def deprovision_database(
    cluster: str, deletion_policy: Literal["Retain", "Delete"] = "Retain", mgmt_context: str | None = None
) -> str:
    """Retain (default: data kept, marked orphaned) or Delete the database of CLUSTER.

    Args:
        cluster: the registered cluster that no longer has postgres=required.
        deletion_policy: Retain keeps the database and its data; Delete removes both.
        mgmt_context: the management cluster's context (default: fleetflow's configuration).
    """
    outcome = release_label_database(cluster, deletion_policy, mgmt_context)
    get_run_logger().info("%s: %s", cluster, outcome.detail)
    return outcome.detail
