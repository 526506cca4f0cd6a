"""The watcher's diffing, as pure functions: last emitted snapshot + what is there now -> events.

No cluster and no Prefect: these are the rules the integration tests exercise end to end.
"""

from __future__ import annotations

from fleetflow import events
from fleetflow.watcher import Emitted, Observed, changes, resync_changes


def kinds(sent: list[events.FleetEvent]) -> list[str]:
    return [e.event for e in sent]


def test_a_new_cluster_is_registered_with_its_labels() -> None:
    [event] = changes("a", None, Observed("u1", {"type": "app"}, "5"))
    assert event.event == events.CLUSTER_REGISTERED
    assert event.id == events.event_id("u1", "registered")
    assert event.resource["prefect.resource.id"] == "fleetflow.cluster.a"
    assert event.resource["fleetflow.label.type"] == "app"
    assert event.payload == {"cluster": "a", "labels": {"type": "app"}}


def test_nothing_changed_emits_nothing() -> None:
    assert changes("a", Emitted("u1", {"type": "app"}), Observed("u1", {"type": "app"}, "9")) == []


def test_label_changes_are_one_labeled_event_naming_added_changed_and_removed() -> None:
    before = Emitted("u1", {"keep": "1", "tier": "db", "old": "x"})
    now = Observed("u1", {"keep": "1", "tier": "web", "new": "y"}, "12")
    [event] = changes("a", before, now)
    assert event.event == events.CLUSTER_LABELED
    assert event.id == events.event_id("u1", "labeled", "12")
    assert event.payload == {
        "cluster": "a",
        "added": {"new": "y"},
        "changed": {"tier": {"from": "db", "to": "web"}},
        "removed": {"old": "x"},
        "labels": {"keep": "1", "tier": "web", "new": "y"},
    }
    # Prefect cannot match an absent label: the removed one is named in the resource.
    assert event.resource["fleetflow.label-removed.old"] == "x"
    assert "fleetflow.label.old" not in event.resource
    assert event.resource["fleetflow.label.tier"] == "web"


def test_the_labeled_id_follows_the_resource_version_so_a_replay_is_the_same_event() -> None:
    before, now = Emitted("u1", {}), Observed("u1", {"a": "1"}, "12")
    [first], [again] = changes("a", before, now), changes("a", before, now)
    assert first.id == again.id  # Prefect drops the replay after a crash before persisting
    [later] = changes("a", before, Observed("u1", {"a": "1"}, "13"))
    assert later.id != first.id  # a later change to the same labels is a new event


def test_a_gone_cluster_is_deregistered_with_its_last_labels() -> None:
    [event] = changes("a", Emitted("u1", {"type": "app"}), None)
    assert event.event == events.CLUSTER_DEREGISTERED
    assert event.id == events.event_id("u1", "deregistered")
    assert event.payload == {"cluster": "a", "labels": {"type": "app"}}


def test_a_cluster_never_emitted_and_gone_emits_nothing() -> None:
    assert changes("a", None, None) == []


def test_a_recreated_cluster_is_deregistered_then_registered() -> None:
    sent = changes("a", Emitted("old", {"type": "app"}), Observed("new", {"type": "db"}, "3"))
    assert kinds(sent) == [events.CLUSTER_DEREGISTERED, events.CLUSTER_REGISTERED]
    assert sent[0].id == events.event_id("old", "deregistered")
    assert sent[0].payload["labels"] == {"type": "app"}
    assert sent[1].id == events.event_id("new", "registered")
    assert sent[1].payload["labels"] == {"type": "db"}


def test_a_resync_orders_listed_clusters_first_then_vanished_ones_by_name() -> None:
    before = {
        "z-gone": Emitted("uz", {}),
        "b-same": Emitted("ub", {"t": "1"}),
        "a-gone": Emitted("ua", {}),
        "c-relabeled": Emitted("uc", {"t": "1"}),
    }
    now = {
        "d-new": Observed("ud", {}, "1"),
        "c-relabeled": Observed("uc", {"t": "2"}, "2"),
        "b-same": Observed("ub", {"t": "1"}, "3"),
    }
    result = resync_changes(before, now)
    assert [(name, kinds(sent)) for name, sent in result] == [
        ("d-new", [events.CLUSTER_REGISTERED]),
        ("c-relabeled", [events.CLUSTER_LABELED]),
        ("a-gone", [events.CLUSTER_DEREGISTERED]),
        ("z-gone", [events.CLUSTER_DEREGISTERED]),
    ]


def test_observed_reads_uid_labels_and_resource_version_from_an_object() -> None:
    obj = {"metadata": {"name": "a", "uid": "u1", "resourceVersion": "8", "labels": {"k": "v"}}}
    assert Observed.of(obj) == Observed("u1", {"k": "v"}, "8")
    assert Observed.of({"metadata": {"name": "a", "uid": "u1"}}) == Observed("u1", {}, "")
