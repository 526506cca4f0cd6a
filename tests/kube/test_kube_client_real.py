"""KubeClient's defaults against real API servers (the local fleet): what a fake cannot show.

- deleting a Job takes its Pods with it (the garbage collector, told ``Background``);
- a label selector is applied by the API server;
- server-side apply does not take over another manager's field unless forced, and fleetflow's
  own create/merge_patch count as another manager (so the registry's spec apply forces).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from fleetflow.errors import ApplyConflictError
from fleetflow.kube import KubeClient
from fleetflow.labels import Selector
from fleetflow.registry import Registry, crd
from tests.support.eventually import eventually
from tests.support.local_fleet import LocalFleet, ensure_namespace

pytestmark = pytest.mark.integration


def job(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox", "command": ["true"]}],
                }
            },
        },
    }


def pods_of(client: KubeClient, namespace: str, job_name: str) -> list[dict[str, Any]]:
    items, _ = client.list("v1", "Pod", namespace, f"job-name={job_name}")
    return items


def test_deleting_a_job_deletes_its_pods(local_fleet: LocalFleet, namespace: str) -> None:
    client = local_fleet.client("workload-cluster")
    ensure_namespace(client, namespace)
    client.apply(job("once", namespace))
    # The job controller creates the Pod (no node runs it: there are no kubelets).
    eventually(lambda: pods_of(client, namespace, "once"), "the Job's Pod")

    assert client.delete("batch/v1", "Job", "once", namespace)
    eventually(lambda: not pods_of(client, namespace, "once"), "the Job's Pods to be garbage-collected")


def test_a_label_selector_is_applied_by_the_server(local_fleet: LocalFleet, namespace: str) -> None:
    client = local_fleet.client("mgmt")
    ensure_namespace(client, namespace)
    for name, labels in [("a", {"type": "services"}), ("b", {"type": "app"}), ("c", {})]:
        client.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
            }
        )
    matching, _ = client.list("v1", "ConfigMap", namespace, Selector.parse("type=services"))
    assert [o["metadata"]["name"] for o in matching] == ["a"]
    without, _ = client.list("v1", "ConfigMap", namespace, Selector.parse("!type"))
    assert "c" in [o["metadata"]["name"] for o in without]
    assert not {"a", "b"} & {o["metadata"]["name"] for o in without}


def test_apply_takes_over_another_managers_field_only_when_forced(
    local_fleet: LocalFleet, namespace: str
) -> None:
    client = local_fleet.client("mgmt")
    ensure_namespace(client, namespace)

    def config_map(value: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "shared", "namespace": namespace},
            "data": {"key": value},
        }

    client.apply(config_map("fleetflow's"))
    # Someone else (kubectl edit, an operator) sets the same field.
    resource = client.resource("v1", "ConfigMap")
    resource.patch(
        body={"data": {"key": "theirs"}},
        name="shared",
        namespace=namespace,
        content_type="application/merge-patch+json",
        field_manager="kubectl-edit",
    )
    with pytest.raises(ApplyConflictError, match="kubectl-edit"):
        client.apply(config_map("fleetflow's again"))
    assert client.get("v1", "ConfigMap", "shared", namespace)["data"] == {"key": "theirs"}

    client.apply(config_map("fleetflow's again"), force=True)
    assert client.get("v1", "ConfigMap", "shared", namespace)["data"] == {"key": "fleetflow's again"}


def test_apply_conflicts_with_what_fleetflow_wrote_by_create_or_patch(
    local_fleet: LocalFleet, namespace: str
) -> None:
    """create() and merge_patch() write as manager ``fleetflow`` with operation Update, which
    server-side apply treats as another manager: why some call sites must force."""
    client = local_fleet.client("mgmt")
    ensure_namespace(client, namespace)
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "mine", "namespace": namespace},
        "data": {"key": "created"},
    }
    client.create(body)
    client.merge_patch("v1", "ConfigMap", "mine", namespace, {"data": {"other": "patched"}})
    changed = {**body, "data": {"key": "applied", "other": "applied"}}
    with pytest.raises(ApplyConflictError) as info:
        client.apply(changed)
    assert "\n" not in str(info.value)
    assert ".data.key" in str(info.value)
    assert client.apply(changed, force=True)["data"] == changed["data"]


def test_a_cluster_registered_again_under_another_context_takes_it(local_fleet: LocalFleet) -> None:
    """Registry.apply creates a FleetCluster, then applies its spec: the apply must force."""
    registry = Registry(local_fleet.client("mgmt"))
    registry.install()
    name = f"t-reregister-{uuid.uuid4().hex[:6]}"
    try:
        registry.ensure_namespace(name)
        registry.apply(name, "workload-cluster", {"type": "app"})
        registry.apply(name, "service-cluster")
        live = registry.mgmt.get(crd.API_VERSION, crd.KIND, name, name)
        assert live["spec"]["context"] == "service-cluster"
        assert live["metadata"]["labels"] == {"type": "app"}
    finally:
        registry.deregister(name, delete_namespace=True)
