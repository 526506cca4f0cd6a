"""Database requests: defaults, refusals with a reason, and the CNPG names they map to."""

from __future__ import annotations

import re
from typing import Any

import pytest

from fleetflow.databases import crd, status
from fleetflow.databases.spec import DatabaseSpec, RequestRef, cnpg_name, manifest
from fleetflow.errors import APINotFoundError, UsageError


def test_defaults_are_the_documented_ones() -> None:
    spec = DatabaseSpec.from_spec("orders", {})
    assert (spec.database, spec.owner, spec.instances, spec.storage) == ("app", "app", 1, "1Gi")
    assert (spec.deletion_policy, spec.secret_name) == ("Retain", "orders-credentials")
    assert DatabaseSpec.from_spec("x", {"database": "shop"}).owner == "shop"


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ({"database": "Bad-Name"}, "spec.database"),
        ({"database": "x" * 64}, "spec.database"),
        ({"owner": "1abc"}, "spec.owner"),
        ({"instances": 0}, "spec.instances"),
        ({"instances": 10}, "spec.instances"),
        ({"instances": -1}, "spec.instances"),
        ({"instances": True}, "spec.instances"),
        ({"instances": "3"}, "spec.instances"),
        ({"storage": "1GB"}, "spec.storage"),
        ({"storage": "-1Gi"}, "spec.storage"),
        ({"storage": "99999999Gi"}, "spec.storage"),
        ({"deletionPolicy": "Orphan"}, "spec.deletionPolicy"),
        ({"secretName": "Not_A_Secret"}, "spec.secretName"),
        ({"serviceClusterSelector": {"zone": 1}}, "spec.serviceClusterSelector"),
        ({"replicas": 3}, "spec.replicas"),
    ],
)
def test_an_invalid_spec_is_refused_naming_the_field(spec: dict[str, object], names: str) -> None:
    with pytest.raises(UsageError, match=re.escape(names)):
        DatabaseSpec.from_spec("x", spec)


def test_the_crd_schema_carries_the_same_limits() -> None:
    version = crd.definition()["spec"]["versions"][0]
    props = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert props["instances"]["minimum"] == 1
    assert props["instances"]["maximum"] == crd.MAX_INSTANCES
    assert props["deletionPolicy"]["enum"] == ["Retain", "Delete"]
    assert props["database"]["default"] == "app"
    assert props["storage"]["default"] == "1Gi"
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:1] == ["Ready"]
    assert {"Endpoint", "Service-Cluster", "Age"} <= set(columns)


def test_cnpg_names_are_dns_safe_unique_and_stable() -> None:
    a = cnpg_name(RequestRef("w1", "a-b", "c"))
    b = cnpg_name(RequestRef("w1", "a", "b-c"))
    assert a != b, "a-b/c and a/b-c must not share a Cluster"
    assert a == cnpg_name(RequestRef("w1", "a-b", "c"))
    long = cnpg_name(RequestRef("w", "n" * 63, "m" * 63))
    assert len(long) <= 40
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", long)
    assert long != cnpg_name(RequestRef("w", "n" * 63, "m" * 62))
    assert not a.startswith("cluster-"), "must not collide with the label path's cluster-<name>"


def test_references_parse_and_refuse() -> None:
    assert RequestRef.parse("w/team-a/orders") == RequestRef("w", "team-a", "orders")
    for bad in ("w/orders", "w/team-a/orders/x", "W/team/orders", "w/../x"):
        with pytest.raises(UsageError, match="invalid"):
            RequestRef.parse(bad)


def test_manifest_round_trips_the_spec() -> None:
    spec = DatabaseSpec.from_spec("orders", {"database": "shop", "instances": 3, "deletionPolicy": "Delete"})
    body = manifest(RequestRef("w", "team-a", "orders"), spec)
    assert body["apiVersion"] == "fleetflow.io/v1alpha1"
    assert body["kind"] == "Database"
    assert DatabaseSpec.from_spec("orders", body["spec"]) == spec


def test_status_keeps_the_transition_time_while_ready_does_not_change() -> None:
    ref = RequestRef("w", "team-a", "orders")
    report = status.Report(status.READY, True, "Ready", "ok", host="127.0.0.1", port=5432)
    first = status.body(ref, report, 2, None)["status"]
    again = status.body(ref, report, 3, first)["status"]
    assert again["conditions"][0]["lastTransitionTime"] == first["conditions"][0]["lastTransitionTime"]
    assert again["observedGeneration"] == 3
    assert again["endpoint"] == {"host": "127.0.0.1", "port": 5432}
    failed = status.body(ref, status.Report(status.FAILED, False, "Timeout", "slow"), 3, first)["status"]
    assert failed["conditions"][0]["status"] == "False"
    assert failed["conditions"][0]["reason"] == "Timeout"


def test_a_live_object_with_defaults_contains_what_was_rendered() -> None:
    from fleetflow.databases.provision import contains

    rendered = {"spec": {"instances": 3, "managed": {"services": {"disabledDefaultServices": ["ro", "r"]}}}}
    live = {
        "spec": {
            "instances": 3,
            "enableSuperuserAccess": False,
            "managed": {"services": {"disabledDefaultServices": ["ro", "r"]}},
        },
        "status": {"phase": "x"},
    }
    assert contains(live, rendered)
    assert not contains({"spec": {**live["spec"], "instances": 1}}, rendered)
    assert not contains(
        {"spec": {"instances": 3, "managed": {"services": {"disabledDefaultServices": ["ro"]}}}}, rendered
    )


def _registry(servers: dict[str, str], ready: dict[str, bool | None], created: dict[str, str]) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(
        list=lambda: [SimpleNamespace(name=n, ready=r, created=created[n]) for n, r in ready.items()],
        kubeconfig=lambda name: SimpleNamespace(server=_known(servers, name)),
    )


def _known(servers: dict[str, str], name: str) -> str:
    if name not in servers:
        raise APINotFoundError(f"Secret {name}/{name}-kubeconfig not found", status=404)
    return servers[name]


def test_a_cluster_registered_twice_is_served_once_preferring_a_working_registration() -> None:
    from fleetflow.databases.inventory import serving_name, unaliased

    servers = {"alpha": "https://a", "broken": "https://a", "zeta": "https://a", "other": "https://b"}
    ready = {"alpha": False, "broken": False, "zeta": True, "other": None}
    created = dict.fromkeys(servers, "2026-12-01T10:00:00Z")
    registry = _registry(servers, ready, created)
    assert unaliased(registry, list(servers)) == ["other", "zeta"]
    assert [serving_name(registry, n) for n in servers] == ["zeta", "zeta", "zeta", "other"]


def test_an_alias_registered_later_never_takes_a_served_cluster_over() -> None:
    """The first registration keeps serving, whatever the alias is called: were the serving name
    to move, the request would get a second CNPG Cluster in the new name's namespace."""
    from fleetflow.databases.inventory import serving_name, unaliased

    servers = {"workload": "https://w", "app": "https://w"}
    created = {"workload": "2026-12-01T10:00:00Z", "app": "2026-12-01T10:05:00Z"}
    registry = _registry(servers, dict.fromkeys(servers, True), created)
    assert unaliased(registry, list(servers)) == ["workload"]
    assert serving_name(registry, "app") == "workload"
    assert serving_name(registry, "workload") == "workload"
    assert serving_name(registry, "gone") == "gone"
