"""The LoadBalancer allocator's decisions: who gets which address, what is freed, who waits."""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any, cast

import pytest
from fleetflow_dev.nodes import controllers, loadbalancer
from fleetflow_dev.nodes.addresses import NodeAddresses
from fleetflow_dev.nodes.loadbalancer import Change, LoadBalancers, plan

from fleetflow.errors import APIUnavailableError
from fleetflow.kube import KubeClient

POOL = NodeAddresses(3).loadbalancer_pool()


def svc(
    name: str,
    *ips: str,
    namespace: str = "shop",
    created: str = "2026-12-07T10:00:00Z",
    type_: str = "LoadBalancer",
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": {"type": type_, **spec},
        "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]} if ips else {}},
    }
    return body


def test_the_pool_is_the_nodes_range() -> None:
    assert POOL[0] == "172.31.3.1"
    assert POOL[-1] == "172.31.3.254"
    assert len(POOL) == 254


def test_new_services_get_the_lowest_free_addresses_oldest_first() -> None:
    services = [
        svc("b", created="2026-12-07T10:00:02Z"),
        svc("a", created="2026-12-07T10:00:01Z"),
        svc("held", "172.31.3.1", created="2026-12-07T09:00:00Z"),
    ]
    decided = plan(services, POOL)
    assert decided.changes == [Change("shop", "a", "172.31.3.2"), Change("shop", "b", "172.31.3.3")]
    assert decided.pending == []
    assert decided.assigned == {
        ("shop", "held"): "172.31.3.1",
        ("shop", "a"): "172.31.3.2",
        ("shop", "b"): "172.31.3.3",
    }


def test_nothing_changes_when_every_service_has_its_address() -> None:
    services = [svc("a", "172.31.3.1"), svc("b", "172.31.3.7"), svc("c", "10.0.0.9", type_="ClusterIP")]
    assert plan(services, POOL).changes == []  # a replayed event writes nothing


def test_a_deleted_services_address_is_reused_lowest_first() -> None:
    # "a" (172.31.3.1) was deleted: it is simply not listed any more.
    services = [svc("b", "172.31.3.2"), svc("c", created="2026-12-07T11:00:00Z")]
    assert plan(services, POOL).changes == [Change("shop", "c", "172.31.3.1")]


def test_a_service_no_longer_a_loadbalancer_frees_its_address() -> None:
    services = [svc("was-lb", "172.31.3.1", type_="ClusterIP"), svc("new", created="2026-12-07T11:00:00Z")]
    decided = plan(services, POOL)
    assert Change("shop", "was-lb", None) in decided.changes
    assert Change("shop", "new", "172.31.3.1") in decided.changes


def test_addresses_outside_the_pool_are_not_ours() -> None:
    services = [svc("other-impl", "192.0.2.1", type_="ClusterIP"), svc("x", "192.0.2.5")]
    decided = plan(services, POOL)
    # "x" shows an address someone else wrote, outside the pool: it gets one of ours.
    assert decided.changes == [Change("shop", "x", "172.31.3.1")]


def test_another_load_balancer_class_is_left_alone() -> None:
    assert plan([svc("metallb", loadBalancerClass="metallb.io/x")], POOL).changes == []


def test_a_requested_address_in_the_pool_is_honoured_when_free() -> None:
    services = [svc("a"), svc("wants-9", loadBalancerIP="172.31.3.9", created="2026-12-07T09:00:00Z")]
    decided = plan(services, POOL)
    assert sorted(decided.changes, key=lambda c: c.name) == [
        Change("shop", "a", "172.31.3.1"),
        Change("shop", "wants-9", "172.31.3.9"),
    ]


def test_a_requested_address_held_or_outside_the_pool_waits() -> None:
    services = [
        svc("holder", "172.31.3.9", created="2026-12-07T09:00:00Z"),
        svc("wants-9", loadBalancerIP="172.31.3.9"),
        svc("wants-out", loadBalancerIP="10.1.2.3"),
    ]
    decided = plan(services, POOL)
    assert decided.changes == []
    reasons = {p.name: p.reason for p in decided.pending}
    assert reasons["wants-9"] == "spec.loadBalancerIP 172.31.3.9 is held by shop/holder"
    assert "outside the pool" in reasons["wants-out"]


def test_a_service_moves_to_the_free_address_it_asks_for() -> None:
    decided = plan([svc("a", "172.31.3.1", loadBalancerIP="172.31.3.5")], POOL)
    assert decided.changes == [Change("shop", "a", "172.31.3.5")]


def test_an_exhausted_pool_leaves_the_service_pending() -> None:
    pool = POOL[:2]
    services = [svc("a", "172.31.3.1"), svc("b", "172.31.3.2"), svc("c", created="2026-12-07T11:00:00Z")]
    decided = plan(services, pool)
    assert decided.changes == []
    (pending,) = decided.pending
    assert (pending.name, pending.reason) == ("c", "the pool (2 addresses) is exhausted")


def test_a_duplicate_address_stays_with_the_older_service() -> None:
    services = [
        svc("young", "172.31.3.1", created="2026-12-07T11:00:00Z"),
        svc("old", "172.31.3.1", created="2026-12-07T09:00:00Z"),
    ]
    assert plan(services, POOL).changes == [Change("shop", "young", "172.31.3.2")]
    assert plan(services, POOL[:1]).changes == [Change("shop", "young", None)]


def test_services_being_deleted_hold_nothing() -> None:
    going = svc("going", "172.31.3.1")
    going["metadata"]["deletionTimestamp"] = "2026-12-07T12:00:00Z"
    decided = plan([going, svc("new", created="2026-12-07T11:00:00Z")], POOL)
    assert Change("shop", "new", "172.31.3.1") in decided.changes


def test_status_bodies() -> None:
    assert loadbalancer.status_body(Change("shop", "a", "172.31.3.1")) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "a", "namespace": "shop"},
        "status": {"loadBalancer": {"ingress": [{"ip": "172.31.3.1", "ipMode": "VIP"}]}},
    }
    assert loadbalancer.status_body(Change("shop", "a", None))["status"] == {"loadBalancer": {"ingress": []}}


class FakeClient:
    """Lists the given Services; records status writes, failing those named in ``fail``."""

    def __init__(self, services: list[dict[str, Any]], fail: tuple[str, ...] = ()) -> None:
        self.services = services
        self.fail = fail
        self.written: list[tuple[str, str | None]] = []

    def list(self, api_version: str, kind: str) -> tuple[list[dict[str, Any]], str]:
        return self.services, "1"

    def apply_status(self, body: dict[str, Any], *, force: bool = False) -> dict[str, Any]:
        name = body["metadata"]["name"]
        if name in self.fail:
            raise APIUnavailableError(f"apply status of Service {name}: connection refused")
        ingress = body["status"]["loadBalancer"]["ingress"]
        self.written.append((name, ingress[0]["ip"] if ingress else None))
        return body


def test_one_failed_write_does_not_keep_the_others_and_is_raised() -> None:
    fake = FakeClient([svc("a"), svc("b", created="2026-12-07T11:00:00Z")], fail=("a",))
    with pytest.raises(APIUnavailableError):
        LoadBalancers("c", POOL).reconcile(cast(KubeClient, fake), loadbalancer.KEY)
    assert fake.written == [("b", "172.31.3.2")]  # "a" keeps its place: it is retried


def test_a_pending_service_is_looked_at_again_later() -> None:
    fake = FakeClient([svc("a", "172.31.3.1"), svc("b")])
    controller = LoadBalancers("c", POOL[:1])
    assert controller.reconcile(cast(KubeClient, fake), loadbalancer.KEY) == controller.retry_pending
    assert fake.written == []
    fake.services = [svc("b")]  # "a" was deleted
    assert controller.reconcile(cast(KubeClient, fake), loadbalancer.KEY) is None
    assert fake.written == [("b", "172.31.3.1")]


def test_a_failing_reconcile_is_retried_with_backoff_and_never_raised() -> None:
    fake = FakeClient([svc("a")], fail=("a",))
    loop = controllers.Loop("c", LoadBalancers("c", POOL), lambda: cast(KubeClient, fake))
    loop._client = (cast(KubeClient, fake), cast(controllers.BoundedClient, fake))
    loop.sync(loadbalancer.KEY)
    loop.sync(loadbalancer.KEY)
    assert loop._backoff[loadbalancer.KEY].failures == 2
    fake.fail = ()
    loop.sync(loadbalancer.KEY)
    assert loadbalancer.KEY not in loop._backoff
    assert fake.written == [("a", "172.31.3.1")]


def test_a_call_that_hangs_is_given_up() -> None:
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(APIUnavailableError, match="no answer within"):
        controllers._bounded(lambda: release.wait(30), "get Service x in c", 0.2)
    assert time.monotonic() - started < 5
    release.set()
    assert controllers._bounded(lambda: 42, "get", 1.0) == 42
    with pytest.raises(ZeroDivisionError):
        controllers._bounded(lambda: 1 // 0, "get", 1.0)


def test_the_clusters_argument() -> None:
    assert controllers.parse_clusters("service-cluster:1, workload-cluster:2") == {
        "service-cluster": 1,
        "workload-cluster": 2,
    }
    for wrong in ("", "a", "a:x", "a:1,b:1", "a:100"):
        with pytest.raises((argparse.ArgumentTypeError, ValueError)):
            controllers.parse_clusters(wrong)
