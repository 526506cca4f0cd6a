"""The local fleet's clusters are real Kubernetes API servers, and separate from each other."""

from __future__ import annotations

from typing import Any

import pytest

from fleetflow.errors import APIInvalidError, APINotFoundError
from tests.support.local_fleet import LocalFleet, ensure_namespace

pytestmark = pytest.mark.integration

GROUP = "tests.fleetflow.io"


def _crd(plural: str, kind: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"created-by": "fleetflow-tests"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                            },
                        }
                    },
                }
            ],
        },
    }


def _established(crd: dict[str, Any] | None) -> bool:
    conditions = (crd or {}).get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def test_a_crd_and_its_object_exist_only_in_their_cluster(local_fleet: LocalFleet, namespace: str) -> None:
    mgmt = local_fleet.client("mgmt")
    crd = _crd("widgets", "Widget")
    mgmt.apply(crd)
    mgmt.wait(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        crd["metadata"]["name"],
        None,
        _established,
        timeout=30,
        awaiting="the Widget CRD to be Established",
    )
    ensure_namespace(mgmt, namespace)
    widget = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": namespace},
        "spec": {"size": 3},
    }
    live = mgmt.apply(widget)
    assert live["spec"]["size"] == 3
    managers = {(m["manager"], m["operation"]) for m in live["metadata"]["managedFields"]}
    assert ("fleetflow", "Apply") in managers

    for other in ("service-cluster", "workload-cluster"):
        client = local_fleet.client(other)
        with pytest.raises(APINotFoundError, match="does not serve Widget"):
            client.get(f"{GROUP}/v1", "Widget", "w1", namespace)
        assert client.get_or_none("v1", "Namespace", namespace) is None
        assert (
            client.get_or_none("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd["metadata"]["name"])
            is None
        )
    mgmt.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd["metadata"]["name"])


def test_each_cluster_reports_its_own_identity(local_fleet: LocalFleet) -> None:
    servers = {local_fleet.client(n).api.configuration.host for n in local_fleet.names}
    assert len(servers) == len(local_fleet.names)
    for name in local_fleet.names:
        assert local_fleet.client(name).version()["gitVersion"].startswith("v1.")


def test_a_deleted_namespace_really_disappears(local_fleet: LocalFleet, namespace: str) -> None:
    workload = local_fleet.client("workload-cluster")
    ensure_namespace(workload, namespace)
    workload.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": namespace},
            "data": {"k": "v"},
        }
    )
    assert workload.delete("v1", "Namespace", namespace)
    # Only kube-controller-manager's namespace controller empties the namespace and
    # removes its finalizer; without it the namespace would stay Terminating forever.
    workload.wait(
        "v1",
        "Namespace",
        namespace,
        None,
        lambda ns: ns is None,
        timeout=60,
        awaiting=f"namespace {namespace} to be deleted by the namespace controller",
    )
    assert workload.get_or_none("v1", "ConfigMap", "cm", namespace) is None


def test_a_malformed_object_is_rejected_by_the_api_server(local_fleet: LocalFleet, namespace: str) -> None:
    service = local_fleet.client("service-cluster")
    ensure_namespace(service, namespace)
    with pytest.raises(APIInvalidError) as info:
        service.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "Not_A_Valid_Name", "namespace": namespace},
            }
        )
    assert "metadata.name" in str(info.value)
    assert "Invalid value" in str(info.value)
    assert info.value.status == 422

    with pytest.raises(APIInvalidError) as typed:
        service.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "d", "namespace": namespace},
                "spec": {"replicas": "three"},
            }
        )
    assert "replicas" in str(typed.value)
    assert service.get_or_none("apps/v1", "Deployment", "d", namespace) is None
