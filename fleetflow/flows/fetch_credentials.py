"""fetch-credentials: deliver a cluster's database credentials to the management or workload cluster.

The label's database is a Database request, so this is its converge (the same task as
database-request), which writes ``pg-credentials`` and ``pg-loadbalancer-data`` where asked and
rewrites a stale copy elsewhere: after a rotation both hold the new password. A rotation needs
no run of this flow (the ``-app`` Secret's change re-converges the request); it stays for the
UI, the CLI and moving the credentials between mgmt and workload.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from fleetflow.databases.spec import label_ref
from fleetflow.errors import PermanentError
from fleetflow.tasks.databases import converge_request


@flow(name="fetch-credentials", validate_parameters=True)
def fetch_credentials(
    cluster: str,
    deliver_to: Literal["mgmt", "workload"] | None = None,
    mgmt_context: str | None = None,
    timeout_seconds: float = 300.0,
) -> dict[str, Any]:
    """Write pg-credentials and pg-loadbalancer-data for CLUSTER; rewrites only when the source changed.

    Args:
        cluster: the registered cluster whose database credentials to deliver.
        deliver_to: "mgmt" (namespace CLUSTER of the management cluster, as in the seed) or
            "workload" (namespace todo of CLUSTER itself, keeping credentials out of mgmt);
            default: where they went last time, else "mgmt".
        mgmt_context: the management cluster's context (default: fleetflow's configuration).
        timeout_seconds: how long to wait for a database that is not usable right now.
    """
    request = str(label_ref(cluster))
    outcome = converge_request(request, timeout_seconds, mgmt_context, None, deliver_to)
    if outcome.phase == "Absent":
        raise PermanentError(f"cluster {cluster!r} has no database: run provision-database first")
    if outcome.phase != "Ready":
        raise PermanentError(f"database {request}: {outcome.detail}")
    get_run_logger().info(
        "credentials for %s %s %s (endpoint %s)",
        cluster,
        "written to" if outcome.published else "already current in",
        outcome.delivered_to,
        outcome.endpoint,
    )
    return {
        "cluster": cluster,
        "target": outcome.delivered_to,
        "endpoint": outcome.endpoint,
        "changed": bool(outcome.published),
    }
