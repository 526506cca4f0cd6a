"""database-request: make one Database object (``CLUSTER/NAMESPACE/NAME``) true, or finalise it.

Started by the automation on ``fleetflow.database-request.changed`` (the watcher emits it when a
Database is created, changed or deleted in any registered cluster), by reconcile, from the UI,
the CLI or the webhook API. The same run provisions, delivers the credentials next to the
request and writes its status; on deletion it applies the request's ``deletionPolicy``.
A request that cannot be served ends the run Failed with the reason its status shows.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from fleetflow.errors import PermanentError
from fleetflow.tasks.databases import converge_request


@flow(name="database-request", validate_parameters=True)
def database_request(
    request: str, timeout_seconds: float = 300.0, mgmt_context: str | None = None
) -> dict[str, Any]:
    """Converge the Database request CLUSTER/NAMESPACE/NAME.

    Args:
        request: the Database object, as CLUSTER/NAMESPACE/NAME.
        timeout_seconds: how long to wait for the database to become usable.
        mgmt_context: the management cluster's context (default: fleetflow's configuration).
    """
    outcome = converge_request(request, timeout_seconds, mgmt_context)
    get_run_logger().info("%s: %s (%s)", outcome.request, outcome.phase, outcome.detail)
    if outcome.phase == "Failed":
        raise PermanentError(f"database request {outcome.request}: {outcome.detail}")
    return {"request": outcome.request, "phase": outcome.phase, "detail": outcome.detail}
