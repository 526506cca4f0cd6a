"""The watcher's persisted state: a corrupt entry is reported and reset, never fatal.

The management cluster is a plain in-memory stand-in: these tests are about how the watcher
reads and rewrites its ConfigMap, not about the Kubernetes API.
"""

from __future__ import annotations

import json
import logging

import pytest

from fleetflow import events
from fleetflow.watcher import STATE_NAME, STATE_NAMESPACE, LabelWatcher
from tests.support.watcher_fakes import Mgmt, cluster


def entry(uid: str, **labels: str) -> str:
    return json.dumps({"uid": uid, "labels": labels})


@pytest.mark.parametrize(
    "corrupt",
    [
        "{not json",  # truncated write
        "[]",  # JSON, but not an entry
        '{"uid": "u-a"}',  # no labels
        '{"uid": 1, "labels": {}}',  # wrong types
        '{"uid": "u-a", "labels": {"k": 1}}',
    ],
)
def test_a_corrupt_entry_is_reported_and_treated_as_never_emitted(
    corrupt: str, caplog: pytest.LogCaptureFixture
) -> None:
    mgmt = Mgmt(
        {"a": corrupt, "b": entry("u-b", type="app")},
        [cluster("a", "u-a", type="app"), cluster("b", "u-b", type="app")],
    )
    sent: list[events.FleetEvent] = []
    with caplog.at_level(logging.WARNING, logger="fleetflow.watcher"):
        LabelWatcher(mgmt, emit=sent.extend).resync()  # type: ignore[arg-type]

    # "a" is emitted again as registered (same deterministic id: Prefect drops a duplicate).
    assert [(e.event, e.resource["prefect.resource.id"]) for e in sent] == [
        (events.CLUSTER_REGISTERED, "fleetflow.cluster.a")
    ]
    [patch] = mgmt.patches  # the corrupt value is overwritten with what was just emitted
    assert {k: json.loads(v) for k, v in patch["data"].items()} == {
        "a": {"uid": "u-a", "labels": {"type": "app"}}
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"{STATE_NAMESPACE}/{STATE_NAME}" in warnings[0]
    assert "'a'" in warnings[0]
    assert "\n" not in warnings[0]


def test_a_corrupt_entry_of_a_cluster_that_is_gone_is_removed() -> None:
    mgmt = Mgmt({"gone": "{not json", "b": entry("u-b")}, [cluster("b", "u-b")])
    sent: list[events.FleetEvent] = []
    LabelWatcher(mgmt, emit=sent.extend).resync()  # type: ignore[arg-type]
    assert sent == []  # nothing is known about it, so there is nothing to deregister
    assert mgmt.patches == [{"data": {"gone": None}}]  # and the next resync does not warn again
