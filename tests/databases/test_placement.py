"""Which service cluster gets a Database request (the label's included), and that the choice
never moves by itself; a retained database is found and adopted back."""

from __future__ import annotations

from collections import Counter

import pytest

from fleetflow.databases import placement
from fleetflow.databases.spec import RequestRef, label_ref
from fleetflow.errors import PermanentError
from fleetflow.registry import ClusterRecord

APP = label_ref("app")


def fleet(*services: str, requesters: tuple[str, ...] = ("app",)) -> list[ClusterRecord]:
    records = [ClusterRecord(name, labels={"type": "services"}) for name in services]
    return records + [ClusterRecord(name, labels={"postgres": "required"}) for name in requesters]


def place(
    records: list[ClusterRecord],
    ref: RequestRef = APP,
    recorded: str = "",
    extra: dict[str, str] | None = None,
    retained_on: tuple[str, ...] = (),
) -> str:
    return placement.place(records, ref, recorded, extra or {}, lambda c: c in retained_on)


def test_the_only_service_cluster_is_chosen() -> None:
    assert place(fleet("svc")) == "svc"


def test_the_recorded_choice_is_kept_while_it_qualifies() -> None:
    records = fleet("svc-a", "svc-b", "svc-c")
    for recorded in ("svc-a", "svc-b", "svc-c"):
        assert place(records, recorded=recorded) == recorded


def test_a_new_service_cluster_never_moves_a_placed_database() -> None:
    records = fleet("svc-a", "svc-b")
    refs = [label_ref(f"app-{i}") for i in range(30)]
    before = {ref: place(records, ref) for ref in refs}
    grown = [*records, ClusterRecord("svc-new", labels={"type": "services"})]
    assert {ref: place(grown, ref, recorded=before[ref]) for ref in refs} == before


def test_a_database_moves_only_when_its_service_cluster_stops_being_one() -> None:
    records = fleet("svc-a", "svc-b")
    first = place(records)
    other = ({"svc-a", "svc-b"} - {first}).pop()
    retired = [r if r.name != first else ClusterRecord(first, labels={"type": "retired"}) for r in records]
    assert place(retired, recorded=first) == other


def test_a_retained_database_is_adopted_back_where_it_is() -> None:
    records = fleet("svc-a", "svc-b", "svc-c")
    chosen = place(records)
    elsewhere = next(name for name in ("svc-a", "svc-b", "svc-c") if name != chosen)
    assert place(records, retained_on=(elsewhere,)) == elsewhere
    assert place(records, recorded=chosen, retained_on=(elsewhere,)) == chosen, "a recorded choice wins"


def test_the_request_selector_narrows_the_candidates() -> None:
    records = [*fleet("svc-a"), ClusterRecord("svc-eu", labels={"type": "services", "region": "eu"})]
    assert place(records, extra={"region": "eu"}) == "svc-eu"


def test_without_a_service_cluster_the_error_says_so() -> None:
    with pytest.raises(
        PermanentError, match=r"^no service cluster for 'app': no registered cluster matches type=services$"
    ):
        place(fleet(requesters=("app", "other")))


def test_the_choice_does_not_depend_on_the_order_clusters_are_listed_in() -> None:
    names = [f"svc-{i}" for i in range(5)]
    for requester in ("app", "billing", "search"):
        assert placement.pick(requester, names, None) == placement.pick(requester, reversed(names), None)


def test_requests_are_spread_over_the_service_clusters() -> None:
    records = fleet("svc-a", "svc-b", "svc-c")
    counts = Counter(place(records, RequestRef("wl", "team", f"db-{i}")) for i in range(300))
    assert set(counts) == {"svc-a", "svc-b", "svc-c"}
    assert min(counts.values()) > 60, f"rendezvous hashing should spread evenly: {counts}"


def test_pick_keeps_a_recorded_choice_only_while_it_is_a_candidate() -> None:
    assert placement.pick("app", ["svc-a", "svc-b"], "svc-b") == "svc-b"
    assert placement.pick("app", ["svc-a"], "svc-b") == "svc-a"
    assert placement.pick("app", [], "svc-b") is None
