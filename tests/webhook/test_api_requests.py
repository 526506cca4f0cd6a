"""Database requests through the webhook API: created, read, listed and deleted as objects."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import httpx
import pytest

from fleetflow.databases import crd
from fleetflow.flows.register_cluster import register_cluster
from fleetflow.registry import Registry
from fleetflow.webhook import create_app
from tests.support.local_fleet import LocalFleet
from tests.support.webhook_api import running

pytestmark = pytest.mark.integration
TOKEN = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def api(local_fleet: LocalFleet, prefect_api: str) -> Iterator[httpx.Client]:
    patch = pytest.MonkeyPatch()
    patch.setenv("KUBECONFIG", str(local_fleet.kubeconfig))
    patch.setenv("FLEETFLOW_MGMT_CONTEXT", "mgmt")
    registry = Registry(local_fleet.client("mgmt"))
    registry.install()
    register_cluster(name="workload-cluster", context="workload-cluster", mgmt_context="mgmt")
    try:
        with running(create_app(lambda: registry, TOKEN)) as url:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                yield client
    finally:
        patch.undo()


def test_a_request_is_applied_read_listed_and_deleted(api: httpx.Client, local_fleet: LocalFleet) -> None:
    namespace = f"t-api-{uuid.uuid4().hex[:6]}"
    body = {"cluster": "workload-cluster", "namespace": namespace, "name": "orders", "instances": 2}
    created = api.post("/v1/databases", json={**body, "deletionPolicy": "Delete"})
    assert created.status_code == 202, created.text
    assert created.json()["request"] == f"workload-cluster/{namespace}/orders"
    assert created.json()["changed"] is True
    assert api.post("/v1/databases", json={**body, "deletionPolicy": "Delete"}).json()["changed"] is False
    workload = local_fleet.client("workload-cluster")
    try:
        obj = workload.get(crd.API_VERSION, crd.KIND, "orders", namespace)
        assert obj["spec"] == {
            "database": "app",
            "instances": 2,
            "storage": "1Gi",
            "deletionPolicy": "Delete",
            "secretName": "orders-credentials",
        }
        url = f"/v1/databases/workload-cluster/{namespace}/orders"
        read = api.get(url)
        assert read.status_code == 200, read.text
        assert read.json()["secret"] == f"{namespace}/orders-credentials"
        listed = [r["request"] for r in api.get("/v1/requests").json()]
        assert f"workload-cluster/{namespace}/orders" in listed
        gone = api.delete(url)
        assert gone.status_code == 202, gone.text
        # No finalizer yet (no flow ran): the object is gone at once.
        assert workload.get_or_none(crd.API_VERSION, crd.KIND, "orders", namespace) is None
        assert api.get(url).status_code == 404
    finally:
        workload.delete("v1", "Namespace", namespace)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"instances": 0}, "spec.instances"),
        ({"storage": "a lot"}, "spec.storage"),
        ({"database": "Bad Name"}, "spec.database"),
        ({"deletionPolicy": "Sometimes"}, "spec.deletionPolicy"),
        ({"replicas": 3}, "replicas"),
    ],
)
def test_a_bad_request_is_a_422_and_creates_nothing(
    api: httpx.Client, local_fleet: LocalFleet, extra: dict[str, object], says: str
) -> None:
    namespace = f"t-bad-{uuid.uuid4().hex[:6]}"
    body = {"cluster": "workload-cluster", "namespace": namespace, "name": "x", **extra}
    answer = api.post("/v1/databases", json=body)
    assert answer.status_code == 422, answer.text
    assert says in answer.text
    assert local_fleet.client("workload-cluster").get_or_none("v1", "Namespace", namespace) is None


def test_namespace_without_name_is_refused(api: httpx.Client) -> None:
    answer = api.post("/v1/databases", json={"cluster": "workload-cluster", "namespace": "team-a"})
    assert answer.status_code == 422
    assert "both namespace and name" in answer.json()["detail"]
