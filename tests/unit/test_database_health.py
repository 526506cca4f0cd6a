"""A request's Ready condition against its CNPG Cluster's readiness (``fleetflow.databases.health``).

The request watcher emits a request's event only when the two disagree: a provisioned request
must go Ready=False while its Cluster's instance is down, and Ready again once it is back, and
nothing else (a request still provisioning, or failed for its own reason, is not re-run by a
Cluster's every status write).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from fleetflow import events
from fleetflow.databases import health
from fleetflow.databases.converge import REQUEST
from fleetflow.databases.watcher import ClusterWatch
from fleetflow.errors import APINotFoundError

HEALTHY = {"phase": "Cluster in healthy state", "conditions": [{"type": "Ready", "status": "True"}]}
DOWN = {
    "phase": "Waiting for the instances to become active",
    "instances": 1,
    "readyInstances": 0,
    "conditions": [{"type": "Ready", "status": "False"}],
}


def cnpg(status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "c", "uid": "u"}, "spec": {"instances": 1}, "status": status}


def request(ready: str, reason: str, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "r", "namespace": "n"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "status": {"conditions": [{"type": "Ready", "status": ready, "reason": reason}]},
    }


@pytest.mark.parametrize(
    ("cluster", "ready", "reason", "expected"),
    [
        (DOWN, "True", "Ready", True),  # its instance died: show it
        (HEALTHY, "False", "Unavailable", True),  # back: show it
        (HEALTHY, "False", "Timeout", True),  # became ready after the flow gave up waiting
        (HEALTHY, "True", "Ready", False),
        (DOWN, "False", "Unavailable", False),  # already shown
        (DOWN, "False", "Provisioning", False),  # its flow is waiting for it already
        (HEALTHY, "False", "InvalidSpec", False),  # only its owner can fix that
        (HEALTHY, "False", "Provisioning", False),
    ],
)
def test_an_event_only_where_the_request_must_change(
    cluster: dict[str, Any], ready: str, reason: str, expected: bool
) -> None:
    assert health.disagree(cnpg(cluster), request(ready, reason)) is expected


def test_a_request_being_deleted_is_left_to_its_deletion() -> None:
    assert not health.disagree(cnpg(DOWN), request("True", "Ready", deleting=True))


def test_the_summary_says_how_many_instances_are_ready() -> None:
    assert health.summary(cnpg(HEALTHY)) == "ready"
    assert health.summary(cnpg(DOWN)) == "not ready (Waiting for the instances to become active, 0/1 ready)"
    assert health.summary(cnpg({})) == "not ready (no status yet, 0/1 ready)"


class _Kube:
    """A service cluster whose CloudNativePG arrives after the watch started, and whose one
    Cluster's instance is already down when it is first listed; the request's cluster."""

    def __init__(self, watch: Any) -> None:
        self.watch, self.lists = watch, 0

    def list(self, api_version: str, kind: str, label_selector: Any = None) -> tuple[list[Any], str]:
        self.lists += 1
        if self.lists == 1:
            raise APINotFoundError("the server could not find the requested resource")
        down = cnpg(DOWN)
        down["metadata"].update(namespace="wl", resourceVersion="9", annotations={REQUEST: "wl/team/r"})
        return [down], "9"

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        self.watch.stop.set()
        return iter(())

    def get_or_none(self, *args: Any) -> dict[str, Any]:
        return request("True", "Ready")


def test_a_cluster_down_before_the_watch_listed_it_is_shown_too() -> None:
    """The health watch is level-triggered: a service cluster without CloudNativePG yet is looked
    at again soon, and what its first list shows counts, not only later changes."""
    emitted: list[events.FleetEvent] = []
    registry = SimpleNamespace()
    watch = ClusterWatch(registry, "svc", emitted.extend, 1)  # type: ignore[arg-type]
    kube = _Kube(watch)
    registry.client = lambda name: kube
    watch.watch_health()
    [event] = emitted
    assert event.payload["request"] == "wl/team/r"
    assert event.payload["health"].startswith("not ready")
    assert kube.lists == 2
