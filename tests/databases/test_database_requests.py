"""Database requests on the local fleet: several per cluster, their Secrets, changes, deletion.

The database-request flow is called as the automation would call it (one run per request);
the watcher and automations that start it are tested with the platform. Credentials are proven
by connecting with psql to the stand-in's real PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fleetflow_dev.cnpg import chart_dir

from fleetflow.databases import crd
from fleetflow.databases.spec import RequestRef, cnpg_name
from fleetflow.errors import APIInvalidError, PermanentError
from fleetflow.flows.database_request import database_request
from fleetflow.registry import Registry
from tests.support.local_fleet import TEST_LABEL, LocalFleet
from tests.support.requests_support import CNPG, ask, ns, psql, secret, seeded_fleet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(
    local_fleet: LocalFleet, prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    with seeded_fleet(local_fleet, prefect_api, tmp_path_factory) as registry:
        yield registry


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, local_fleet: LocalFleet) -> None:
    monkeypatch.setenv("KUBECONFIG", str(local_fleet.kubeconfig))
    monkeypatch.setenv("FLEETFLOW_MGMT_CONTEXT", "mgmt")


def test_three_requests_in_two_clusters_get_three_databases_each_its_own(
    fleet: Registry, local_fleet: LocalFleet, request: pytest.FixtureRequest
) -> None:
    a, b = ns(request, "a"), ns(request, "b")
    refs = [
        RequestRef("workload-cluster", a, "orders"),
        RequestRef("workload-cluster", b, "orders"),
        RequestRef("mgmt", a, "reports"),
    ]
    for ref in refs:
        ask(local_fleet, ref.namespace, ref)
    for ref in refs:
        assert database_request(request=str(ref), timeout_seconds=120)["phase"] == "Ready"
    service = local_fleet.client("service-cluster")
    for ref in refs:
        assert service.get(CNPG, "Cluster", cnpg_name(ref), ref.cluster)["spec"]["instances"] == 1
    seen: list[dict[str, str]] = []
    for ref in refs:
        client = local_fleet.client(ref.cluster)
        obj = client.get(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)
        cond = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        assert (cond["status"], obj["status"]["serviceCluster"]) == ("True", "service-cluster")
        creds = secret(client, ref.namespace, f"{ref.name}-credentials")
        assert set(creds) == {"username", "user", "password", "host", "port", "dbname", "uri"}
        assert obj["status"]["endpoint"] == {"host": creds["host"], "port": int(creds["port"])}
        done = psql(creds, "select current_user")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == creds["username"]
        seen.append(creds)
    for mine in seen:
        for other in seen:
            if other is not mine:
                refused = psql(mine, "select 1", dbname=other["dbname"])
                assert refused.returncode != 0, "a request's credentials opened another request's database"
    mgmt = local_fleet.client("mgmt")
    for ref in refs[:2]:
        assert mgmt.get_or_none("v1", "Secret", f"{ref.name}-credentials", ref.namespace) is None, (
            "credentials of a workload request passed through the management cluster"
        )


def test_a_change_of_instances_is_applied_and_observed(
    fleet: Registry, local_fleet: LocalFleet, request: pytest.FixtureRequest
) -> None:
    ref = RequestRef("workload-cluster", ns(request, "i"), "sized")
    ask(local_fleet, ref.namespace, ref)
    database_request(request=str(ref), timeout_seconds=120)
    ask(local_fleet, ref.namespace, ref, instances=3, storage="2Gi")
    assert database_request(request=str(ref), timeout_seconds=120)["phase"] == "Ready"
    live = local_fleet.client("service-cluster").get(CNPG, "Cluster", cnpg_name(ref), ref.cluster)
    assert (live["spec"]["instances"], live["spec"]["storage"]["size"]) == (3, "2Gi")
    obj = local_fleet.client(ref.cluster).get(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]


def test_retain_keeps_the_data_for_a_re_created_request_and_delete_removes_it(
    fleet: Registry, local_fleet: LocalFleet, request: pytest.FixtureRequest
) -> None:
    client, service = local_fleet.client("workload-cluster"), local_fleet.client("service-cluster")
    for policy in ("Retain", "Delete"):
        ref = RequestRef("workload-cluster", ns(request, policy.lower()), "kept")
        ask(local_fleet, ref.namespace, ref, deletionPolicy=policy)
        database_request(request=str(ref), timeout_seconds=120)
        creds = secret(client, ref.namespace, "kept-credentials")
        assert psql(creds, "create table notes (t text); insert into notes values ('before')").returncode == 0
        client.delete(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)
        assert client.get(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)["metadata"][
            "deletionTimestamp"
        ], "the finalizer keeps a deleted request until fleetflow has applied its policy"
        assert database_request(request=str(ref))["phase"] == "Deleted"
        assert client.get_or_none(crd.API_VERSION, crd.KIND, ref.name, ref.namespace) is None
        assert client.get_or_none("v1", "Secret", "kept-credentials", ref.namespace) is None
        left = service.get_or_none(CNPG, "Cluster", cnpg_name(ref), ref.cluster)
        if policy == "Retain":
            assert left is not None
            assert "fleetflow.io/orphaned" in left["metadata"]["annotations"]
        else:
            service.wait(
                CNPG,
                "Cluster",
                cnpg_name(ref),
                ref.cluster,
                lambda o: o is None,
                timeout=60,
                awaiting="the deleted request's CNPG Cluster to be gone",
            )
        ask(local_fleet, ref.namespace, ref, deletionPolicy=policy)
        database_request(request=str(ref), timeout_seconds=120)
        again = secret(client, ref.namespace, "kept-credentials")
        rows = psql(again, "select t from notes")
        if policy == "Retain":
            assert rows.returncode == 0, rows.stderr
            assert rows.stdout.strip() == "before", "Retain lost the data"
        else:
            assert rows.returncode != 0, "Delete kept the data"
            assert "notes" in rows.stderr


def test_invalid_specs_are_refused_and_nothing_is_half_created(
    fleet: Registry, local_fleet: LocalFleet, request: pytest.FixtureRequest
) -> None:
    client = local_fleet.client("workload-cluster")
    namespace = ns(request, "bad")
    client.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": TEST_LABEL}}
    )
    for name, bad in (
        ("zero", {"instances": 0}),
        ("many", {"instances": 100}),
        ("size", {"storage": "lots"}),
        ("name", {"database": "Robert'); DROP TABLE"}),
        ("policy", {"deletionPolicy": "Maybe"}),
    ):
        body = {
            "apiVersion": crd.API_VERSION,
            "kind": crd.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": bad,
        }
        with pytest.raises(APIInvalidError):
            client.apply(body)
        assert client.get_or_none(crd.API_VERSION, crd.KIND, name, namespace) is None
    ref = RequestRef("workload-cluster", namespace, "renamed")
    ask(local_fleet, namespace, ref, database="first")
    database_request(request=str(ref), timeout_seconds=120)
    ask(local_fleet, namespace, ref, database="second")
    with pytest.raises(PermanentError, match="ImmutableField"):
        database_request(request=str(ref), timeout_seconds=120)
    obj = client.get(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)
    cond = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert (cond["status"], cond["reason"]) == ("False", "ImmutableField")
    assert "cannot change" in cond["message"]


def test_reconcile_restores_a_deleted_credentials_secret_and_leaves_the_rest_alone(
    fleet: Registry, local_fleet: LocalFleet, request: pytest.FixtureRequest
) -> None:
    from fleetflow.flows.reconcile import reconcile

    ref = RequestRef("workload-cluster", ns(request, "heal"), "healed")
    ask(local_fleet, ref.namespace, ref)
    database_request(request=str(ref), timeout_seconds=120)
    client = local_fleet.client("workload-cluster")
    before = client.get(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)["metadata"]["resourceVersion"]
    client.delete("v1", "Secret", "healed-credentials", ref.namespace)
    reconcile(chart=str(chart_dir()), repository=None, version=None, timeout_seconds=120, return_state=True)
    restored = secret(client, ref.namespace, "healed-credentials")
    assert psql(restored, "select 1").returncode == 0
    after = client.get(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)["metadata"]["resourceVersion"]
    assert after == before, "reconcile rewrote the status of a request that was already Ready"
