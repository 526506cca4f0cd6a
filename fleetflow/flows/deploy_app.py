"""deploy-app: the seed's todo-table Job on registered clusters labelled type=app that have credentials."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from fleetflow.errors import UsageError
from fleetflow.tasks.app import deploy_app_to
from fleetflow.tasks.operator import select_clusters


@flow(name="deploy-app", validate_parameters=True)
def deploy_app(
    cluster: str | None = None,
    selector: str = "type=app",
    template_dir: str | None = None,
    mgmt_context: str | None = None,
    skip_unready: bool = False,
) -> list[dict[str, Any]]:
    """Apply the Job on CLUSTER, or on every cluster matching SELECTOR.

    Args:
        cluster: one registered cluster (it must match the selector); None for all that match.
        selector: label selector of app clusters.
        template_dir: a directory of templates overriding the defaults.
        mgmt_context: the management cluster's context (default: fleetflow's configuration).
        skip_unready: succeed without doing anything where the cluster is not labelled type=app or
            has no credentials yet (what automations use: deploy only "where both hold").
    """
    logger = get_run_logger()
    matching = select_clusters(selector, mgmt_context)
    targets = [c for c in matching if cluster in (None, c)]
    if cluster is not None and not targets:
        if skip_unready:
            logger.info("%s does not match %s; nothing to deploy", cluster, selector)
            return []
        raise UsageError(f"cluster {cluster!r} does not match {selector}; label it first")
    results = [r for name in targets if (r := deploy_app_to(name, template_dir, skip_unready, mgmt_context))]
    for result in results:
        logger.info("%s: Job %s %s", result["cluster"], result["job"], result["job_outcome"])
    return results
