"""Which service cluster gets a cluster's database, and that the choice never moves by itself."""

from __future__ import annotations

from collections import Counter
from typing import cast

import pytest

from fleetflow.dbaas import placement
from fleetflow.dbaas.names import SERVICE_CLUSTER_ANNOTATION
from fleetflow.errors import APINotFoundError, PermanentError
from fleetflow.registry import ClusterRecord, Registry


class FakeRegistry:
    """Registered clusters in memory; records the annotation writes placement makes."""

    def __init__(self, clusters: dict[str, dict[str, str]]) -> None:
        self.records = {name: ClusterRecord(name, labels=dict(labels)) for name, labels in clusters.items()}
        self.writes: list[tuple[str, dict[str, str | None]]] = []

    def require(self, name: str) -> ClusterRecord:
        if name not in self.records:
            raise APINotFoundError(f"cluster {name!r} is not registered", status=404)
        return self.records[name]

    def get(self, name: str) -> ClusterRecord | None:
        return self.records.get(name)

    def list(self) -> list[ClusterRecord]:
        return sorted(self.records.values(), key=lambda r: r.name)

    def annotate(self, name: str, annotations: dict[str, str | None]) -> ClusterRecord:
        self.writes.append((name, annotations))
        record = self.records[name]
        for key, value in annotations.items():
            if value is None:
                record.annotations.pop(key, None)
            else:
                record.annotations[key] = value
        return record

    def choose(self, requester: str) -> str:
        return placement.choose_service_cluster(cast(Registry, self), requester)


def fleet(*services: str, requesters: tuple[str, ...] = ("app",)) -> FakeRegistry:
    clusters = {name: {"type": "services"} for name in services}
    clusters.update({name: {"postgres": "required"} for name in requesters})
    return FakeRegistry(clusters)


def test_the_only_service_cluster_is_chosen_and_recorded() -> None:
    registry = fleet("svc")
    assert registry.choose("app") == "svc"
    assert registry.records["app"].annotations[SERVICE_CLUSTER_ANNOTATION] == "svc"
    assert placement.recorded_service_cluster(cast(Registry, registry), "app") == "svc"


def test_choosing_again_keeps_the_choice_and_writes_nothing() -> None:
    registry = fleet("svc-a", "svc-b", "svc-c")
    first = registry.choose("app")
    assert registry.choose("app") == first
    assert len(registry.writes) == 1, "only the first choice is written"


def test_a_new_service_cluster_never_moves_a_database() -> None:
    registry = fleet("svc-a", "svc-b", requesters=tuple(f"app-{i}" for i in range(30)))
    before = {name: registry.choose(name) for name in registry.records if name.startswith("app-")}
    registry.records["svc-new"] = ClusterRecord("svc-new", labels={"type": "services"})
    after = {name: registry.choose(name) for name in before}
    assert after == before


def test_a_database_moves_only_when_its_service_cluster_stops_being_one() -> None:
    registry = fleet("svc-a", "svc-b")
    first = registry.choose("app")
    other = ({"svc-a", "svc-b"} - {first}).pop()
    registry.records[first].labels["type"] = "retired"
    assert registry.choose("app") == other
    assert registry.records["app"].annotations[SERVICE_CLUSTER_ANNOTATION] == other


def test_without_a_service_cluster_the_error_says_so() -> None:
    registry = fleet(requesters=("app", "other"))
    with pytest.raises(
        PermanentError, match=r"^no service cluster for 'app': no registered cluster matches type=services$"
    ):
        registry.choose("app")
    assert registry.writes == []


def test_an_unregistered_requester_is_not_placed() -> None:
    with pytest.raises(APINotFoundError, match="cluster 'ghost' is not registered"):
        fleet("svc").choose("ghost")


def test_the_choice_does_not_depend_on_the_order_clusters_are_listed_in() -> None:
    names = [f"svc-{i}" for i in range(5)]
    for requester in ("app", "billing", "search"):
        assert placement.pick(requester, names, None) == placement.pick(requester, reversed(names), None)


def test_requesters_are_spread_over_the_service_clusters() -> None:
    names = ["svc-a", "svc-b", "svc-c"]
    counts = Counter(placement.pick(f"cluster-{i}", names, None) for i in range(300))
    assert set(counts) == set(names)
    assert min(counts.values()) > 60, f"rendezvous hashing should spread evenly: {counts}"


def test_pick_keeps_a_recorded_choice_only_while_it_is_a_candidate() -> None:
    assert placement.pick("app", ["svc-a", "svc-b"], "svc-b") == "svc-b"
    assert placement.pick("app", ["svc-a"], "svc-b") == "svc-a"
    assert placement.pick("app", [], "svc-b") is None
