"""Tasks over the cluster registry: validate, load credentials, probe, store, apply, label.

Tasks that see a kubeconfig never persist their result and never cache (credentials must not
reach Prefect's result storage); they pass :class:`fleetflow.kube.Kubeconfig` objects, whose
repr hides the credentials, between each other in memory only.
"""

from __future__ import annotations

from prefect import task

from fleetflow import labels as label_syntax
from fleetflow.config import resolve_kubeconfig
from fleetflow.kube import Kubeconfig, probe
from fleetflow.registry import ClusterRecord, Probe, connect, validate_cluster_name
from fleetflow.tasks.policy import SECRET, api_task_options


@task(name="validate-registration")
def validate_registration(name: str, labels: dict[str, str] | None) -> dict[str, str] | None:
    """Fail at once, with no retry, on a bad name or label."""
    validate_cluster_name(name)
    return label_syntax.validate(labels) if labels is not None else None


@task(name="load-kubeconfig", **SECRET)
def load_kubeconfig(path: str | None, context: str) -> Kubeconfig:
    return Kubeconfig.from_file(resolve_kubeconfig(path).path, context)


@task(name="probe-cluster", **SECRET, **api_task_options())
def probe_cluster(kubeconfig: Kubeconfig) -> Probe:
    """``/version`` of the cluster; connection failures are retried with backoff."""
    return Probe(ready=True, version=probe(kubeconfig), reason="Reachable", message="")


@task(name="read-registration", **api_task_options())
def read_registration(name: str, mgmt_context: str | None) -> ClusterRecord | None:
    return connect(mgmt_context).get(name)


@task(name="ensure-cluster-namespace", **api_task_options())
def ensure_cluster_namespace(name: str, mgmt_context: str | None) -> bool:
    return connect(mgmt_context).ensure_namespace(name)


@task(name="store-kubeconfig", **SECRET, **api_task_options())
def store_kubeconfig(
    name: str, kubeconfig: Kubeconfig, owner_uid: str | None, mgmt_context: str | None
) -> None:
    connect(mgmt_context).store_kubeconfig(name, kubeconfig, owner_uid)


@task(name="apply-registration", **api_task_options())
def apply_registration(
    name: str, context: str, labels: dict[str, str] | None, mgmt_context: str | None
) -> ClusterRecord:
    return connect(mgmt_context).apply(name, context, labels)


@task(name="record-probe", **api_task_options())
def record_probe(name: str, result: Probe, mgmt_context: str | None) -> ClusterRecord:
    return connect(mgmt_context).record_probe(name, result)


@task(name="roll-back-registration", **api_task_options())
def roll_back_registration(name: str, delete_namespace: bool, mgmt_context: str | None) -> None:
    """Remove what a failed first registration wrote, so nothing half-registered remains."""
    connect(mgmt_context).deregister(name, delete_namespace=delete_namespace)
