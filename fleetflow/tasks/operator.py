"""Tasks of install-operator: pick clusters by label, install the chart, record the addon."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from fleetflow.databases import operator
from fleetflow.databases.names import SERVICE_CLUSTER_ANNOTATION
from fleetflow.labels import Selector
from fleetflow.registry import connect
from fleetflow.tasks.policy import api_task_options


@task(name="select-clusters", **api_task_options())
def select_clusters(selector: str, mgmt_context: str | None) -> list[str]:
    wanted = Selector.parse(selector)
    return [r.name for r in connect(mgmt_context).list() if wanted.matches(r.labels)]


# helm reads the cluster's kubeconfig: no result persistence, no cache.
@task(name="helm-upgrade-install", persist_result=False, cache_policy=NO_CACHE, **api_task_options())
def helm_upgrade_install(
    cluster: str,
    chart: str,
    version: str | None,
    repository: str | None,
    release: str,
    namespace: str,
    values: dict[str, Any] | None,
    flow_name: str,
    mgmt_context: str | None,
) -> dict[str, Any]:
    registry = connect(mgmt_context)
    result = operator.install_operator(
        registry,
        cluster,
        operator.find_helm(),
        chart=chart,
        version=version,
        repository=repository,
        release=release,
        namespace=namespace,
        values=values,
    )
    existing = {a.key: a for a in operator.addons(registry.mgmt)}
    addon = operator.Addon(
        cluster, "helm chart", namespace, release, result.version, operator.now(), flow_name
    )
    if result.changed or addon.key not in existing or existing[addon.key].version != result.version:
        operator.record(registry.mgmt, addon)
    return {
        "cluster": cluster,
        "release": release,
        "namespace": namespace,
        "chart": result.chart,
        "version": result.version,
        "changed": result.changed,
    }


@task(name="read-registry", **api_task_options())
def read_registry(mgmt_context: str | None) -> list[tuple[str, dict[str, str], bool]]:
    """(name, labels, has a label database placed) for every registered cluster."""
    return [
        (r.name, r.labels, SERVICE_CLUSTER_ANNOTATION in r.annotations) for r in connect(mgmt_context).list()
    ]
