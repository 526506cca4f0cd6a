"""KubeClient.wait: returns as soon as the object satisfies the predicate, backs off while the
watch keeps failing instead of relisting in a hot loop, waits out an API server restart
(connections refused after it answered once), and names what it awaited when time runs out.

The API server is scripted with httpx's MockTransport; the wait's backoff is made short
(its shape is tested in test_backoff.py), so the tests take well under a second each.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from fleetflow.backoff import Backoff
from fleetflow.errors import APIUnavailableError
from fleetflow.kube import client as kube_client
from fleetflow.kube.client import KubeClient, WaitTimeoutError

PATH = "/apis/batch/v1/namespaces/ns/jobs"


class Api:
    """Lists answer ``listing`` (or raise while ``down`` > 0 after the first); watches answer
    ``watch`` lines (or a 410 status)."""

    def __init__(self, listing: list[dict[str, Any]], watch: list[dict[str, Any]], down: int = 0) -> None:
        self.listing, self.watch, self.down = listing, watch, down
        self.lists = 0
        self.watches = 0
        self.first_list_fails = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.params.get("watch") == "1":
            self.watches += 1
            if self.down > 0:
                self.down -= 1
                raise httpx.RemoteProtocolError("peer closed connection")
            lines = b"".join(json.dumps(e).encode() + b"\n" for e in self.watch)
            return httpx.Response(200, content=lines)
        self.lists += 1
        assert request.url.params["fieldSelector"] == "metadata.name=j"
        if self.first_list_fails or (self.lists > 1 and self.down > 0):
            self.down -= 1
            raise httpx.ConnectError("Connection refused")
        return httpx.Response(200, json={"items": self.listing, "metadata": {"resourceVersion": "1"}})


class Resource:
    def path(self, namespace: str | None = None) -> str:
        return PATH


def kube(api: Api) -> KubeClient:
    client = KubeClient(api=None, context="test")  # type: ignore[arg-type]
    client._http = httpx.AsyncClient(transport=httpx.MockTransport(api), base_url="https://api")
    client.resource = lambda api_version, kind: Resource()  # type: ignore[assignment,method-assign,return-value]
    return client


@pytest.fixture(autouse=True)
def short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_client, "WAIT_BACKOFF", Backoff(first=0.01, cap=0.05, jitter=0.0))


def job(version: str, done: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": "j", "resourceVersion": version}, "status": {"succeeded": 1} if done else {}}


def succeeded(obj: dict[str, Any] | None) -> bool:
    return bool(obj and obj["status"].get("succeeded"))


def test_wait_returns_what_the_list_shows_when_it_already_holds() -> None:
    api = Api([job("1", done=True)], [])
    assert kube(api).wait("batch/v1", "Job", "j", "ns", succeeded, timeout=5, awaiting="x") == job("1", True)
    assert api.watches == 0


def test_wait_returns_when_the_watch_delivers() -> None:
    api = Api([job("1")], [{"type": "MODIFIED", "object": job("2", done=True)}])
    found = kube(api).wait("batch/v1", "Job", "j", "ns", succeeded, timeout=5, awaiting="x")
    assert found == job("2", done=True)


def test_wait_sees_a_deletion_as_none() -> None:
    api = Api([job("1")], [{"type": "DELETED", "object": job("2")}])
    assert kube(api).wait("batch/v1", "Job", "j", "ns", lambda o: o is None, timeout=5, awaiting="x") is None


def test_wait_backs_off_between_relists_while_the_watch_keeps_failing() -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}}
    api = Api([job("1")], [gone])
    with pytest.raises(WaitTimeoutError, match=r"timed out after 1s waiting for the job \(Job ns/j in test"):
        kube(api).wait("batch/v1", "Job", "j", "ns", succeeded, timeout=1, awaiting="the job")
    assert api.lists <= 30, f"{api.lists} relists in 1 s with pauses of at least 10 ms: a hot loop"


def test_wait_rides_out_an_api_server_restart() -> None:
    api = Api([job("1")], [{"type": "MODIFIED", "object": job("9", done=True)}], down=6)
    found = kube(api).wait("batch/v1", "Job", "j", "ns", succeeded, timeout=5, awaiting="x")
    assert found is not None
    assert found["metadata"]["resourceVersion"] == "9"
    assert api.down <= 0, "every refused request was retried"


def test_wait_names_the_outage_when_the_deadline_passes_during_it() -> None:
    api = Api([], [], down=10**6)
    with pytest.raises(WaitTimeoutError, match=r"absent; then: watch Job .* cannot reach the API server"):
        kube(api).wait("batch/v1", "Job", "j", "ns", lambda o: o is not None, timeout=1, awaiting="x")


def test_wait_fails_at_once_when_the_server_never_answered() -> None:
    api = Api([], [])
    api.first_list_fails = True
    with pytest.raises(APIUnavailableError, match="cannot reach the API server"):
        kube(api).wait("batch/v1", "Job", "j", "ns", lambda o: False, timeout=20, awaiting="x")
    assert api.lists == 1
