"""Every CloudNativePG Cluster fleetflow renders is accepted by CloudNativePG's real schema.

The local fleet's chart carries the real Cluster CRD of operator v1.24.1 (the seed's chart pin),
fetched from the Go module proxy; a manifest the real operator would reject is rejected here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleetflow_dev.cnpg import chart_dir

from fleetflow.databases.provision import render as render_cluster
from fleetflow.databases.spec import DatabaseSpec, RequestRef
from fleetflow.errors import APIInvalidError
from fleetflow.kube import KubeClient
from fleetflow.templating import render
from tests.support.local_fleet import TEST_LABEL, LocalFleet

pytestmark = pytest.mark.integration
CNPG = "postgresql.cnpg.io/v1"


@pytest.fixture
def service(local_fleet: LocalFleet) -> Iterator[tuple[KubeClient, str]]:
    """The service cluster with the real CRD, and a namespace of this test (no controller runs)."""
    client = local_fleet.client("service-cluster")
    [crd_file] = (chart_dir() / "crds").glob("*.yaml")
    crd = yaml.safe_load(crd_file.read_text())
    assert "x-kubernetes-validations" in crd_file.read_text() or len(crd_file.read_text()) > 100_000, (
        "not CloudNativePG's real CRD"
    )
    client.apply(crd, force=True)

    def established(obj: dict[str, Any] | None) -> bool:
        conditions = ((obj or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    client.wait(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        crd["metadata"]["name"],
        None,
        established,
        timeout=60,
        awaiting="CloudNativePG's Cluster CRD to be Established",
    )
    namespace = f"t-schema-{uuid.uuid4().hex[:6]}"
    client.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": TEST_LABEL}}
    )
    yield client, namespace
    client.delete("v1", "Namespace", namespace)


def rendered(namespace: str) -> list[dict[str, Any]]:
    everything = {
        "cluster": "w-all",
        "cluster_namespace": "fleet",
        "namespace": namespace,
        "instances": 5,
        "database": "shop",
        "owner": "shopkeeper",
        "storage_size": "20Gi",
        "service_name": "w-all-lb",
        "name": "cluster-all-params",
    }
    full = DatabaseSpec.from_spec(
        "orders",
        {"database": "orders", "owner": "team", "instances": 9, "storage": "3Ti", "deletionPolicy": "Delete"},
    )
    bodies = [
        *render("cnpg-cluster.yaml.j2", {"cluster": "w-default", "namespace": namespace}),
        *render("cnpg-cluster.yaml.j2", everything),
        render_cluster(RequestRef("w", "team", "orders"), full),
        render_cluster(RequestRef("w", "team", "defaults"), DatabaseSpec.from_spec("d", {})),
    ]
    for body in bodies:
        body["metadata"]["namespace"] = namespace
    return bodies


def test_every_rendered_cluster_is_accepted_by_the_real_schema(service: tuple[KubeClient, str]) -> None:
    client, namespace = service
    for body in rendered(namespace):
        live = client.apply(body)
        assert live["spec"]["instances"] == body["spec"]["instances"]
        assert (
            live["spec"]["bootstrap"]["initdb"]["database"] == body["spec"]["bootstrap"]["initdb"]["database"]
        )
        assert "enableSuperuserAccess" in live["spec"], "the real schema's defaults were not applied"


def test_what_the_real_operator_refuses_is_refused(service: tuple[KubeClient, str]) -> None:
    client, namespace = service
    [body] = render("cnpg-cluster.yaml.j2", {"cluster": "w-bad", "namespace": namespace})
    body["spec"]["instances"] = 0
    with pytest.raises(APIInvalidError, match="instances"):
        client.apply(body)
    assert client.get_or_none(CNPG, "Cluster", "cluster-w-bad", namespace) is None


def test_the_chart_in_the_package_ships_no_copy_of_the_crd() -> None:
    from fleetflow_dev.cnpg import CHART_SOURCE

    assert not list(Path(CHART_SOURCE).rglob("*postgresql.cnpg.io*")), (
        "the real CRD must be fetched, not committed"
    )
