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
from fleetflow.kube.informer import SYNCED, Event

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


class _Requests:
    """The request's cluster: its request says Ready."""

    def get_or_none(self, *args: Any) -> dict[str, Any]:
        return request("True", "Ready")


def test_a_cluster_down_when_the_watch_first_lists_it_is_shown_too() -> None:
    """The health watch is level-triggered: what its listing shows counts, not only later changes."""
    emitted: list[events.FleetEvent] = []
    watch = ClusterWatch(SimpleNamespace(client=lambda name: _Requests()), "svc", emitted.extend, 1)  # type: ignore[arg-type]
    down = cnpg(DOWN)
    down["metadata"].update(namespace="wl", resourceVersion="9", annotations={REQUEST: "wl/team/r"})
    watch.on_health([Event(SYNCED, items=(down,))])
    [event] = emitted
    assert event.payload["request"] == "wl/team/r"
    assert event.payload["health"].startswith("not ready")
    assert watch.health_synced.is_set()
