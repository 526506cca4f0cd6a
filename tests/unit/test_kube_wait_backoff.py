"""KubeClient.wait backs off between relists while the watch keeps failing, within its deadline,
and waits out an API server restart (connections refused after it answered once).

Time is fake (the module's ``time`` is replaced), so the test runs in milliseconds however long
the simulated wait.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from fleetflow.errors import APIUnavailableError
from fleetflow.kube import client as kube_client
from fleetflow.kube.client import WaitTimeoutError
from tests.unit.kube_fakes import Dynamic, Resource, Result, kube


class Clock:
    """Fake time: list calls cost a millisecond, sleeps advance it by what was asked."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        self.now += 0.001
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(kube_client, "time", fake)
    return fake


GONE = {"type": "ERROR", "raw_object": {"code": 410, "message": "too old resource version"}}


def test_wait_backs_off_between_relists_while_the_watch_keeps_failing(clock: Clock) -> None:
    dynamic = Dynamic([GONE])
    with pytest.raises(WaitTimeoutError, match="timed out after 20s waiting for the job"):
        kube(dynamic).wait("batch/v1", "Job", "j", "ns", lambda o: False, timeout=20, awaiting="the job")
    relists = sum(1 for method, _ in dynamic.res.calls if method == "get")
    assert relists <= 10, f"{relists} relists in 20 s: a hot loop"
    assert clock.sleeps[:5] == [0.5, 1.0, 2.0, 4.0, 5.0]  # doubling, capped at 5 s
    assert max(clock.sleeps) <= 5.0


def test_wait_backoff_never_sleeps_past_the_deadline(clock: Clock) -> None:
    start = clock.now
    with pytest.raises(WaitTimeoutError):
        kube(Dynamic([GONE])).wait("batch/v1", "Job", "j", "ns", lambda o: False, timeout=2, awaiting="x")
    assert sum(clock.sleeps) < 2.0
    assert clock.now - start < 2.1


def test_wait_returns_at_once_when_the_watch_delivers(clock: Clock) -> None:
    obj = {"metadata": {"name": "j", "resourceVersion": "2"}}
    dynamic = Dynamic([{"type": "ADDED", "raw_object": obj}])
    assert kube(dynamic).wait("batch/v1", "Job", "j", "ns", lambda o: o is not None, timeout=5, awaiting="x")
    assert clock.sleeps == []


class Restarting(Dynamic):
    """An API server that answers the first list, breaks the watch, refuses ``down`` relists
    (it is restarting), then lists the awaited object."""

    def __init__(self, down: int, obj: dict[str, Any]) -> None:
        super().__init__()
        self.res = Flaky(down, obj)

    def watch(self, resource: Resource, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.watches += 1
        raise urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead")
        yield {}  # a generator, as the library's watch is


class Flaky(Resource):
    def __init__(self, down: int, obj: dict[str, Any]) -> None:
        super().__init__()
        self.down, self.obj = down, obj

    def get(self, **kwargs: Any) -> Result:
        self.calls.append(("get", kwargs))
        if len(self.calls) == 1:
            return Result({"items": [], "metadata": {"resourceVersion": "1"}})
        if len(self.calls) <= 1 + self.down:
            raise urllib3.exceptions.MaxRetryError(None, "/apis", "Connection refused")  # type: ignore[arg-type]
        return Result({"items": [self.obj], "metadata": {"resourceVersion": "9"}})


def test_wait_rides_out_an_api_server_restart_until_the_deadline(clock: Clock) -> None:
    obj = {"metadata": {"name": "j", "resourceVersion": "9"}}
    dynamic = Restarting(down=6, obj=obj)
    found = kube(dynamic).wait(
        "batch/v1", "Job", "j", "ns", lambda o: o is not None, timeout=60, awaiting="x"
    )
    assert found == obj
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]  # backing off while it is down


def test_wait_names_the_outage_when_the_deadline_passes_during_it(clock: Clock) -> None:
    dynamic = Restarting(down=1000, obj={})
    with pytest.raises(WaitTimeoutError, match=r"absent; then: list Job ns/j in test: cannot reach"):
        kube(dynamic).wait("batch/v1", "Job", "j", "ns", lambda o: o is not None, timeout=20, awaiting="x")


def test_wait_fails_at_once_when_the_server_never_answered(clock: Clock) -> None:
    dynamic = Restarting(down=1000, obj={})
    dynamic.res.calls.append(("get", {}))  # the first list already refused
    with pytest.raises(APIUnavailableError, match="cannot reach the API server"):
        kube(dynamic).wait("batch/v1", "Job", "j", "ns", lambda o: False, timeout=20, awaiting="x")
    assert clock.sleeps == []
