"""reconcile: compare what the labels ask for with what exists, and repair the difference.

Run on a schedule (every 5 minutes by default), it heals what events cannot: an event lost
while a part was down, a database or Job deleted by hand, credentials gone stale after a
rotation. Every step it takes is the same idempotent task the event-driven flows use, so on a
healthy fleet it writes nothing.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from tasks.credentials import deliver_credentials, deploy_app_to
from tasks.database import apply_database, deprovision_database, place_database
from tasks.operator import helm_upgrade_install, read_registry


@flow(name="reconcile", validate_parameters=True)
def reconcile(
    chart: str = "cloudnative-pg",
    repository: str | None = "https://cloudnative-pg.github.io/charts",
    version: str | None = "0.22.1",
    instances: int = 3,
    timeout_seconds: float = 300.0,
    deletion_policy: Literal["Retain", "Delete"] = "Retain",
    mgmt_context: str | None = None,
) -> dict[str, Any]:
    """Make every registered cluster match its labels.

    Args:
        chart: operator chart for clusters labelled type=services (name, oci:// or local path).
        repository: chart repository URL.
        version: chart version.
        instances: PostgreSQL instances for databases that must be (re)created.
        timeout_seconds: how long to wait for a database to become usable.
        deletion_policy: what to do with databases whose cluster no longer has postgres=required.
        mgmt_context: the management cluster's context (default: fleetflow's configuration).
    """
    logger = get_run_logger()
    done: dict[str, list[str]] = {
        "operator": [],
        "database": [],
        "credentials": [],
        "app": [],
        "released": [],
    }
    for name, labels, placed in read_registry(mgmt_context):
        if labels.get("type") == "services":
            result = helm_upgrade_install(
                name, chart, version, repository, "cnpg", "cnpg-system", None, "flow/reconcile", mgmt_context
            )
            if result["changed"]:
                done["operator"].append(name)
        if labels.get("postgres") == "required":
            service_cluster = place_database(name, mgmt_context)
            apply_database(service_cluster, name, instances, None, timeout_seconds, mgmt_context)
            delivered = deliver_credentials(name, None, mgmt_context)
            if delivered["changed"]:
                done["credentials"].append(name)
        elif placed:
            outcome = deprovision_database(name, deletion_policy, mgmt_context)
            if outcome.startswith(("deleted", "retained")):
                done["released"].append(name)
        if labels.get("type") == "app":
            deployed = deploy_app_to(name, None, True, mgmt_context)
            if deployed and deployed["job_outcome"] != "unchanged":
                done["app"].append(name)
    logger.info("reconciled: %s", {k: v for k, v in done.items() if v} or "nothing to repair")
    return done
