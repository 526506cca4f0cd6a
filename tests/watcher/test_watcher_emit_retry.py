"""The watchers while the Prefect server is down: what they saw is sent again, soon, and kept.

The batch is retried in place (the platform's backoff, at most ``EMIT_BACKOFF_MAX`` between
attempts), the registry is not relisted, and nothing is persisted as emitted before the server
accepted the batch. The request watcher's secret and health watches retry the same way: what
they saw is seen once, so giving up would lose it.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from fleetflow import events
from fleetflow.databases.converge import REQUEST
from fleetflow.databases.watcher import ClusterWatch
from fleetflow.errors import PermanentError, TemporaryError
from fleetflow.events import EMIT_BACKOFF_MAX
from fleetflow.watcher import LabelWatcher
from tests.support.watcher_fakes import Mgmt, cluster


class Stop(threading.Event):
    """The watcher's stop event; its waits return at once and are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return self.is_set()


class Registry(Mgmt):
    """Counts lists (a relist would be a second one)."""

    def __init__(self, clusters: list[dict[str, Any]]) -> None:
        super().__init__({}, clusters)
        self.lists = 0

    def list(self, api_version: str, kind: str, *args: Any, **kwargs: Any) -> tuple[list[Any], str]:
        self.lists += 1
        return super().list(api_version, kind)


class Prefect:
    """An emit that fails ``failures`` times (the server is down), then accepts."""

    def __init__(self, registry: Registry, failures: int, error: Exception | None = None) -> None:
        self.registry, self.failures = registry, failures
        self.error = error or TemporaryError("emit ...: Prefect API unreachable (ConnectError: refused)")
        self.sent: list[list[str]] = []
        self.persisted_before: list[int] = []  # ConfigMap patches made before each attempt

    def __call__(self, batch: list[events.FleetEvent]) -> None:
        self.sent.append([str(e.id) for e in batch])
        self.persisted_before.append(len(self.registry.patches))
        if len(self.sent) <= self.failures:
            raise self.error


def watching(registry: Registry, emit: Any, stop: Stop) -> LabelWatcher:
    """A label watcher as run() sets it up: emitting is retried until ``stop``."""
    watcher = LabelWatcher(registry, emit=emit)  # type: ignore[arg-type]
    watcher._stop = stop
    return watcher


def within_backoff(waits: list[float | None], nominal: list[float]) -> bool:
    """Each wait is its nominal pause, shortened by the policy's jitter (at most 20 %)."""
    return len(waits) == len(nominal) and all(
        w is not None and 0.8 * n <= w <= n for w, n in zip(waits, nominal, strict=True)
    )


def test_a_batch_is_sent_again_soon_and_recorded_only_once_accepted() -> None:
    stop = Stop()
    registry = Registry([cluster("a", "u-a", postgres="required")])
    prefect = Prefect(registry, failures=8)
    watching(registry, prefect, stop).resync()

    assert registry.lists == 1, "a Prefect outage must not relist the registry"
    assert within_backoff(stop.waits, [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]), stop.waits
    assert max(w or 0 for w in stop.waits) <= EMIT_BACKOFF_MAX
    assert len(prefect.sent) == 9
    assert len({tuple(ids) for ids in prefect.sent}) == 1, "every attempt sends the same events"
    assert prefect.persisted_before == [0] * 9, "nothing is recorded as emitted before it was accepted"
    assert len(registry.patches) == 1
    assert set(registry.patches[0]["data"]) == {"a"}


def test_a_watcher_stopped_while_prefect_is_down_records_nothing() -> None:
    stop = Stop()
    registry = Registry([cluster("a", "u-a", postgres="required")])

    def down(batch: list[events.FleetEvent]) -> None:
        if len(stop.waits) == 3:
            stop.set()  # SIGTERM while waiting for the server
        raise TemporaryError("emit ...: Prefect API unreachable (ConnectError: refused)")

    with pytest.raises(TemporaryError):
        watching(registry, down, stop).resync()

    assert registry.patches == [], "the next start must diff again and emit what was never accepted"


def test_a_refused_event_is_not_sent_again() -> None:
    stop = Stop()
    registry = Registry([cluster("a", "u-a", postgres="required")])
    refused = PermanentError("emit ...: Prefect API answered HTTP 422 Unprocessable Entity")
    prefect = Prefect(registry, failures=1, error=refused)
    with pytest.raises(PermanentError):
        watching(registry, prefect, stop).resync()
    assert len(prefect.sent) == 1
    assert registry.patches == []


class ServiceCluster:
    """The service cluster's client as the secret watch uses it: the CNPG Cluster a request made."""

    def get_or_none(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Any:
        assert (kind, name, namespace) == ("Cluster", "db", "team")
        return {"metadata": {"name": name, "annotations": {REQUEST: "apps/team/db"}}}


def test_a_password_rotated_while_prefect_is_down_is_sent_once_it_is_back() -> None:
    """The secret watch sees a rotation once; an emit that gave up lost it until the next
    reconcile (the relist after the failure does not show it again)."""
    sent: list[list[events.FleetEvent]] = []

    def prefect(batch: list[events.FleetEvent]) -> None:
        sent.append(batch)
        if len(sent) <= 3:
            raise TemporaryError("emit ...: Prefect API unreachable (ConnectError: refused)")

    watch = ClusterWatch(None, "services", prefect, 30)  # type: ignore[arg-type]
    watch.stop = stop = Stop()
    secret = {
        "metadata": {
            "name": "db-app",
            "namespace": "team",
            "uid": "s-1",
            "resourceVersion": "9",
            "labels": {"cnpg.io/cluster": "db"},
        }
    }
    watch._rotated(ServiceCluster(), secret)  # type: ignore[arg-type]

    assert within_backoff(stop.waits, [0.5, 1.0, 2.0]), stop.waits
    assert len(sent) == 4
    assert [e.payload["request"] for e in sent[-1]] == ["apps/team/db"]
