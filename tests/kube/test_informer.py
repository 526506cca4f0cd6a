"""The informer against a real API server (the local fleet): list then watch, resuming after a
watch ends, relisting after 410 Gone, bookmarks, and a clean stop."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fleetflow_dev.state import FleetState

from fleetflow.kube import KubeClient, WaitTimeoutError
from fleetflow.kube.hub import Watch, hub
from fleetflow.kube.informer import SYNCED, Event, Informer
from tests.support.eventually import eventually
from tests.support.local_fleet import LocalFleet, ensure_namespace

pytestmark = pytest.mark.integration


class Seen:
    """What a handler was given, flattened."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, batch: list[Event]) -> None:
        with self.lock:
            self.events.extend(batch)

    def of(self, name: str) -> list[str]:
        with self.lock:
            return [e.type for e in self.events if e.type != SYNCED and e.name == name]

    def synced(self) -> list[Event]:
        with self.lock:
            return [e for e in self.events if e.type == SYNCED]


def configmap(name: str, namespace: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"informer-test": "yes"}},
        "data": data,
    }


@pytest.fixture
def client(local_fleet: LocalFleet, namespace: str) -> KubeClient:
    kube = local_fleet.client(local_fleet.names[0])
    ensure_namespace(kube, namespace)
    return kube


@pytest.fixture
def started() -> Iterator[list[Watch]]:
    watches: list[Watch] = []
    yield watches
    for watch in watches:
        watch.stop()


def test_lists_then_hands_on_each_change(client: KubeClient, namespace: str, started: list[Watch]) -> None:
    client.apply(configmap("before", namespace, a="1"))
    seen = Seen()
    informer = Informer(client, "v1", "ConfigMap", namespace=namespace, label_selector="informer-test=yes")
    started.append(watch := hub().watch(informer, seen, name="test"))
    assert watch.synced.wait(30), "the first listing was not handled"
    [listing] = seen.synced()
    assert [o["metadata"]["name"] for o in listing.items] == ["before"]

    client.apply(configmap("after", namespace, a="1"))
    client.apply(configmap("after", namespace, a="2"))
    client.delete("v1", "ConfigMap", "after", namespace)
    eventually(
        lambda: seen.of("after") == ["ADDED", "MODIFIED", "DELETED"],
        "ADDED, MODIFIED, DELETED of the new ConfigMap",
        timeout=30,
    )
    assert informer.lists == 1


def test_a_watch_that_ends_resumes_from_its_version_without_relisting(
    client: KubeClient, namespace: str, started: list[Watch]
) -> None:
    seen = Seen()
    informer = Informer(client, "v1", "ConfigMap", namespace=namespace, watch_timeout=2)
    started.append(watch := hub().watch(informer, seen, name="test"))
    assert watch.synced.wait(30)
    eventually(lambda: informer.watches >= 2, "a second watch request (the first lasted its 2 s)", timeout=15)
    client.apply(configmap("late", namespace))
    eventually(lambda: seen.of("late") == ["ADDED"], "the change made after the resume", timeout=30)
    assert informer.lists == 1, "an ended watch resumes from its resourceVersion; it does not relist"


def compact(local_fleet: LocalFleet, cluster: str, revision: str) -> None:
    """Compact the cluster's etcd up to ``revision`` (its gRPC gateway): older resourceVersions
    are gone, as on a long-running cluster."""
    record = FleetState.load(local_fleet.fleet.state_path).clusters[cluster]
    answer = httpx.post(
        f"http://127.0.0.1:{record.etcd_port}/v3/kv/compaction", json={"revision": revision}, timeout=10
    )
    answer.raise_for_status()


def event(name: str, namespace: str) -> dict[str, Any]:
    """A core Event: the kind the API server keeps no watch cache for (its watches are served
    by etcd), so an etcd compaction shows as 410 Gone at once."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": namespace, "apiVersion": "v1"},
        "reason": "InformerTest",
        "message": name,
        "type": "Normal",
    }


def test_a_resource_version_that_was_compacted_away_relists(
    local_fleet: LocalFleet, client: KubeClient, namespace: str, started: list[Watch]
) -> None:
    old = client.apply(event("old", namespace))["metadata"]["resourceVersion"]
    client.apply(event("there", namespace))  # a watch from ``old`` would start here
    now = client.apply(event("latest", namespace))["metadata"]["resourceVersion"]
    compact(local_fleet, local_fleet.names[0], now)
    seen = Seen()
    informer = Informer(client, "v1", "Event", namespace=namespace, field_selector="reason=InformerTest")
    informer.resource_version = old  # as if the watch had been down since then: 410 Gone
    started.append(watch := hub().watch(informer, seen, name="test"))
    assert watch.synced.wait(30), (
        f"no relist after 410 Gone: {[(e.type, e.name) for e in seen.events][:5]}, "
        f"{informer.lists} lists, {informer.watches} watches, last error {informer.last_error!r}"
    )
    [listing] = seen.synced()
    assert sorted(o["metadata"]["name"] for o in listing.items) == ["latest", "old", "there"]
    assert [e for e in seen.events if e.type != SYNCED] == [], "nothing from before the relist"
    assert informer.watches >= 1, "watched from the old version first"
    assert informer.lists == 1, "got 410, listed once"
    client.apply(event("next", namespace))
    eventually(lambda: seen.of("next") == ["ADDED"], "a change after the relist", timeout=30)


def test_bookmarks_move_the_resource_version_without_events(
    client: KubeClient, namespace: str, started: list[Watch]
) -> None:
    """Selected objects do not change; other writes do. The API server's bookmarks carry the
    newer resourceVersion, so a resume does not start from an ever older one."""
    seen = Seen()
    marker = f"m-{uuid.uuid4().hex[:6]}"
    informer = Informer(
        client, "v1", "ConfigMap", namespace=namespace, label_selector=f"informer-test={marker}"
    )
    started.append(watch := hub().watch(informer, seen, name="test"))
    assert watch.synced.wait(30)
    listed = int(informer.resource_version)
    client.apply(configmap("unrelated", namespace))  # advances the server's resourceVersion
    eventually(
        lambda: int(informer.resource_version or 0) > listed,
        "a bookmark past the listed resourceVersion",
        timeout=90,
    )
    assert [e for e in seen.events if e.type != SYNCED] == [], "bookmarks are not handed on"


def test_stop_closes_the_watch_at_once(client: KubeClient, namespace: str) -> None:
    seen = Seen()
    informer = Informer(client, "v1", "ConfigMap", namespace=namespace)
    watch = hub().watch(informer, seen, name="test")
    assert watch.synced.wait(30)
    started = time.monotonic()
    watch.stop()
    assert watch.join(5), "stopped"
    assert time.monotonic() - started < 2
    client.apply(configmap("after-stop", namespace))
    threading.Event().wait(1)  # nothing may arrive: a watch that is stopped hands on nothing
    assert seen.of("after-stop") == []


def test_wait_returns_once_the_object_holds_and_names_what_it_awaited_on_timeout(
    client: KubeClient, namespace: str
) -> None:
    client.apply(configmap("w", namespace, phase="one"))
    later = threading.Timer(0.5, lambda: client.apply(configmap("w", namespace, phase="two")))
    later.start()
    try:
        found = client.wait(
            "v1",
            "ConfigMap",
            "w",
            namespace,
            lambda o: bool(o and o["data"].get("phase") == "two"),
            timeout=30,
            awaiting="phase two",
        )
    finally:
        later.join()
    assert found is not None
    assert found["data"]["phase"] == "two"
    with pytest.raises(WaitTimeoutError, match=rf"waiting for phase three \(ConfigMap {namespace}/w in "):
        client.wait("v1", "ConfigMap", "w", namespace, lambda o: False, timeout=2, awaiting="phase three")
