"""fetch-credentials: copy a database's user, password and address to the management or workload cluster."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from fleetflow.tasks.credentials import deliver_credentials


@flow(name="fetch-credentials", validate_parameters=True)
def fetch_credentials(
    cluster: str, deliver_to: Literal["mgmt", "workload"] | None = None, mgmt_context: str | None = None
) -> dict[str, Any]:
    """Write pg-credentials and pg-loadbalancer-data for CLUSTER; rewrites only when the source changed.

    A copy delivered earlier to the other place (the workload cluster, where deploy-app copies
    it) is rewritten too when it is stale: after a rotation both hold the new password.

    Args:
        cluster: the registered cluster whose database credentials to deliver.
        deliver_to: "mgmt" (namespace CLUSTER of the management cluster, as in the seed) or
            "workload" (namespace todo of CLUSTER itself, keeping credentials out of mgmt);
            default: where they went last time, else "mgmt" (what a rotation's automation uses).
        mgmt_context: the management cluster's context (default: fleetflow's configuration).
    """
    result = deliver_credentials(cluster, deliver_to, mgmt_context)
    get_run_logger().info(
        "credentials for %s %s %s (endpoint %s)",
        cluster,
        "written to" if result["changed"] else "already current in",
        result["target"],
        result["endpoint"],
    )
    return result
