"""withdraw-app: a cluster no longer labelled type=app loses the todo-table Job.

Started by the automation when the label ``type`` is removed or set to another value, and by
reconcile; it checks the labels itself, so a late run for a cluster labelled ``type=app`` again
does nothing.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from fleetflow.tasks.app import withdraw_app_from


@flow(name="withdraw-app", validate_parameters=True)
def withdraw_app(cluster: str, mgmt_context: str | None = None) -> str:
    """Delete the todo-table Job from CLUSTER unless it is labelled type=app.

    Args:
        cluster: the registered cluster.
        mgmt_context: the management cluster's context (default: fleetflow's configuration).
    """
    outcome = withdraw_app_from(cluster, mgmt_context)
    get_run_logger().info("%s: %s", cluster, outcome)
    return outcome
