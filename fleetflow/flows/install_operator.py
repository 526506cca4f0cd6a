"""install-operator: the CloudNativePG chart on every registered cluster matching a selector."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from fleetflow.tasks.operator import helm_upgrade_install, select_clusters


@flow(name="install-operator", validate_parameters=True)
def install_operator(
    selector: str = "type=services",
    cluster: str | None = None,
    chart: str = "cloudnative-pg",
    repository: str | None = "https://cloudnative-pg.github.io/charts",
    version: str | None = "0.22.1",
    release: str = "cnpg",
    namespace: str = "cnpg-system",
    values: dict[str, Any] | None = None,
    mgmt_context: str | None = None,
) -> list[dict[str, Any]]:
    """Install (idempotently) the operator chart with ``helm upgrade --install``.

    Args:
        selector: label selector of the target clusters, e.g. type=services.
        cluster: only this cluster (it must match the selector); None for every match.
        chart: chart name in the repository, an oci:// reference, or a local chart directory.
        repository: chart repository URL (ignored for oci:// and local charts).
        version: chart version (ignored for local charts).
        release: helm release name.
        namespace: release namespace (created if missing).
        values: chart values.
        mgmt_context: the management cluster's context (default: fleetflow's configuration).
    """
    logger = get_run_logger()
    clusters = [c for c in select_clusters(selector, mgmt_context) if cluster in (None, c)]
    if not clusters:
        logger.warning("no registered cluster matches %s; nothing to install", selector)
    results = []
    for cluster in clusters:
        result = helm_upgrade_install(
            cluster,
            chart,
            version,
            repository,
            release,
            namespace,
            values,
            "flow/install-operator",
            mgmt_context,
        )
        logger.info(
            "%s: %s %s %s in %s",
            cluster,
            "installed" if result["changed"] else "unchanged",
            result["chart"],
            result["version"],
            namespace,
        )
        results.append(result)
    return results
