"""The webhook receiver, served by a real uvicorn on loopback, against the local fleet's registry."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from fleetflow.errors import APIForbiddenError, APIUnavailableError, ConfigError
from fleetflow.registry import Registry
from fleetflow.webhook import create_app
from tests.support.local_fleet import LocalFleet
from tests.support.webhook_api import running

pytestmark = pytest.mark.integration

TOKEN = secrets.token_urlsafe(32)
ROW_FIELDS = {"cluster", "service_cluster", "phase", "endpoint", "credentials"}


@pytest.fixture(scope="module")
def registry(local_fleet: LocalFleet) -> Registry:
    reg = Registry(local_fleet.client("mgmt"))
    reg.install()
    return reg


@pytest.fixture
def cluster(registry: Registry) -> Iterator[str]:
    """A registered cluster of this test's own (a FleetCluster without credentials), removed after:
    no test sees labels another test's requests left."""
    name = f"api-{uuid.uuid4().hex[:6]}"
    registry.ensure_namespace(name)
    try:
        registry.apply(name, "workload-cluster", {"type": "app"})
        yield name
    finally:
        registry.deregister(name, delete_namespace=True)


@pytest.fixture(scope="module")
def api(registry: Registry) -> Iterator[str]:
    with running(create_app(lambda: registry, TOKEN)) as url:
        yield url


@pytest.fixture
def client(api: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as c:
        yield c


@pytest.fixture
def anonymous(api: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api, timeout=60) as c:
        yield c


def test_healthz_answers_without_a_token(anonymous: httpx.Client) -> None:
    response = anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("authorization", [None, "Bearer not-the-token", f"Token {TOKEN}", "Bearer"])
def test_v1_needs_the_token(anonymous: httpx.Client, cluster: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for method, path, body in (
        ("GET", "/v1/databases", None),
        ("GET", f"/v1/databases/{cluster}", None),
        ("POST", "/v1/databases", {"cluster": cluster}),
        ("DELETE", f"/v1/databases/{cluster}", None),
    ):
        response = anonymous.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in response.text


def test_unauthenticated_requests_change_nothing(
    anonymous: httpx.Client, registry: Registry, cluster: str
) -> None:
    before = registry.require(cluster)
    anonymous.post("/v1/databases", json={"cluster": cluster}, headers={"Authorization": "Bearer x"})
    assert registry.require(cluster).resource_version == before.resource_version


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"cluster": "Bad_Name"}, "DNS-1123"),
        ({"cluster": "-leading-dash"}, "DNS-1123"),
        ({"cluster": "x" * 64}, "DNS-1123"),
        ({"cluster": ""}, "DNS-1123"),
        ({"cluster": 5}, "string"),
        ({}, "missing"),
        ({"cluster": "fine", "labels": {"postgres": "required"}}, "extra"),
        ([], "valid dictionary"),
    ],
)
def test_bad_bodies_are_422_with_the_reason(client: httpx.Client, body: object, says: str) -> None:
    response = client.post("/v1/databases", json=body)
    assert response.status_code == 422
    assert says in response.text


def test_a_body_that_is_not_json_is_422(client: httpx.Client) -> None:
    response = client.post(
        "/v1/databases", content=b"{cluster:", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "JSON" in response.text


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_bad_name_in_the_path_is_422(client: httpx.Client, method: str) -> None:
    response = client.request(method, "/v1/databases/Bad_Name")
    assert response.status_code == 422
    assert "invalid cluster name 'Bad_Name'" in response.text


def test_an_unknown_cluster_is_404(client: httpx.Client) -> None:
    name = f"api-missing-{uuid.uuid4().hex[:6]}"
    for response in (
        client.post("/v1/databases", json={"cluster": name}),
        client.delete(f"/v1/databases/{name}"),
        client.get(f"/v1/databases/{name}"),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": f"cluster {name!r} is not registered"}


def test_a_request_is_the_label_change_and_is_idempotent(
    client: httpx.Client, registry: Registry, cluster: str
) -> None:
    assert client.get(f"/v1/databases/{cluster}").status_code == 404  # nothing asked yet

    response = client.post("/v1/databases", json={"cluster": cluster})
    assert response.status_code == 202
    assert response.json() == {
        "cluster": cluster,
        "requested": True,
        "changed": True,
        "status_url": f"/v1/databases/{cluster}",
        "request": "",  # the label path, not a Database object
    }
    labelled = registry.require(cluster)
    assert labelled.labels == {
        "type": "app",
        "postgres": "required",
    }  # as `cluster label NAME postgres=required`

    again = client.post("/v1/databases", json={"cluster": cluster})
    assert again.status_code == 202
    assert again.json()["changed"] is False
    assert registry.require(cluster).resource_version == labelled.resource_version  # no write

    status = client.get(response.json()["status_url"])
    assert status.status_code == 200
    assert status.json() == {
        "cluster": cluster,
        "service_cluster": "",
        "phase": "Not provisioned",
        "endpoint": "",
        "credentials": "no",
    }

    listing = client.get("/v1/databases")
    assert listing.status_code == 200
    rows = {row["cluster"]: row for row in listing.json()}
    assert rows[cluster] == status.json()
    assert all(set(row) == ROW_FIELDS for row in rows.values())
    assert "password" not in listing.text.lower()

    released = client.delete(f"/v1/databases/{cluster}")
    assert released.status_code == 202
    assert released.json() == {
        "cluster": cluster,
        "requested": False,
        "changed": True,
        "status_url": f"/v1/databases/{cluster}",
        "request": "",
    }
    unlabelled = registry.require(cluster)
    assert unlabelled.labels == {"type": "app"}

    again = client.delete(f"/v1/databases/{cluster}")
    assert again.status_code == 202
    assert again.json()["changed"] is False
    assert registry.require(cluster).resource_version == unlabelled.resource_version

    gone = client.get(f"/v1/databases/{cluster}")
    assert gone.status_code == 404
    assert "has no database" in gone.json()["detail"]
    assert cluster not in {row["cluster"] for row in client.get("/v1/databases").json()}


def test_the_token_is_never_logged(
    client: httpx.Client, anonymous: httpx.Client, cluster: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = secrets.token_urlsafe(32)
    client.post("/v1/databases", json={"cluster": cluster})
    client.delete(f"/v1/databases/{cluster}")
    client.post("/v1/databases", json={"cluster": "Bad_Name"})
    anonymous.get("/v1/databases", headers={"Authorization": f"Bearer {wrong}"})
    assert "/v1/databases" in caplog.text  # the access log is captured here
    assert TOKEN not in caplog.text
    assert wrong not in caplog.text


def _failing(exc: Exception) -> Callable[[], Registry]:
    def factory() -> Registry:
        raise exc

    return factory


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (APIUnavailableError("list FleetCluster in mgmt: connection refused\n  (retried 3 times)"), 503),
        (ConfigError("no management cluster configured: pass --mgmt-context"), 503),
        (APIForbiddenError("list FleetCluster in mgmt: forbidden", status=403), 502),
    ],
)
def test_management_cluster_errors_are_one_line_json(exc: Exception, code: int) -> None:
    first_line = " ".join(str(exc).split())
    with running(create_app(_failing(exc), TOKEN)) as url, httpx.Client(base_url=url, timeout=60) as c:
        health = c.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {"status": "unavailable", "reason": first_line}
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for response in (
            c.get("/v1/databases", headers=auth),
            c.post("/v1/databases", json={"cluster": "some-cluster"}, headers=auth),
            c.delete("/v1/databases/some-cluster", headers=auth),
        ):
            assert response.status_code == code
            assert response.json() == {"detail": first_line}
            assert "Traceback" not in response.text
