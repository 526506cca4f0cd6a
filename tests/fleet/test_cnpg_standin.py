"""The local CloudNativePG stand-in's databases, as a consumer of CNPG's contract sees them.

A Cluster gets CNPG's Secret and Services and a real database reached with the ``<cluster>-app``
Secret's user and password and the LoadBalancer's ingress IP and port; Clusters share their
service cluster's server but neither credentials nor databases; deleting a Cluster drops its
database; a Secret's password outlives a lost server. The fleet, chart and controller are set
up as :mod:`tests.support.cnpg_standin_support` describes; the chart and the controller's
own behaviour are tested in ``test_cnpg_standin_controller.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fleetflow_dev import binaries, cnpg
from fleetflow_dev.cnpg import contract
from fleetflow_dev.cnpg.controller import StandInController

from fleetflow.errors import FleetError
from fleetflow.supervisor import pgroles
from tests.support.cnpg_standin_support import (
    SECRET_KEYS,
    SEED_SQL,
    SERVICE_CLUSTER,
    WAIT,
    StandIn,
    fresh_namespace,
    helm_environment,
    install_chart,
    no_password_logged,
    plain_cluster,
    private_fleet,
    running_standin,
    seed_cluster,
)
from tests.support.local_fleet import LocalFleet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, assets: binaries.Binaries) -> Iterator[LocalFleet]:
    with private_fleet(tmp_path_factory.mktemp("cnpg-fleet"), assets) as private:
        yield private


@pytest.fixture
def namespace(fleet: LocalFleet, request: pytest.FixtureRequest) -> Iterator[str]:
    with fresh_namespace(fleet, request.node.name) as name:
        yield name


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return helm_environment(tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="module")
def chart(fleet: LocalFleet, helm_env: dict[str, str]) -> None:
    install_chart(fleet, helm_env)


@pytest.fixture
def standin(
    fleet: LocalFleet, chart: None, namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> Iterator[StandIn]:
    with running_standin(fleet, namespace, tmp_path / "cnpg", caplog) as running:
        yield running


def test_seed_cluster_gets_cnpg_objects_and_a_real_database(
    standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    name = "cluster-workload-cluster"
    standin.apply(seed_cluster("workload-cluster", standin.namespace))
    cluster = standin.wait_ready(name)

    status = cluster["status"]
    assert status["instances"] == 3
    assert status["readyInstances"] == 3
    assert status["writeService"] == f"{name}-rw"
    (ready,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "ClusterIsReady")
    assert ready["lastTransitionTime"]
    assert ready["message"]
    assert cnpg.FINALIZER in cluster["metadata"]["finalizers"]
    uid = cluster["metadata"]["uid"]

    secret = standin.secret(f"{name}-app")
    assert secret["type"] == "kubernetes.io/basic-auth"
    assert secret["metadata"]["labels"] == {
        "cnpg.io/reload": "true",
        "cnpg.io/cluster": name,
        "cnpg.io/userType": "app",
        "app.kubernetes.io/managed-by": "cloudnative-pg",
    }
    assert [r["uid"] for r in secret["metadata"]["ownerReferences"]] == [uid]
    assert set(secret["data"]) == SECRET_KEYS
    values = {k: contract.decode(secret, k) for k in SECRET_KEYS}
    # One server holds every Cluster of the service cluster: the role and database are the Cluster's own.
    role = contract.sql_name(standin.namespace, name)
    assert values["username"] == values["user"] == values["dbname"] == role
    assert len(role) <= 63
    assert values["host"] == f"{name}-rw"

    rw = standin.service(f"{name}-rw")
    assert rw is not None
    assert rw["spec"]["type"] == "ClusterIP"
    assert rw["metadata"]["labels"]["cnpg.io/cluster"] == name
    assert standin.service(f"{name}-ro") is None
    assert standin.service(f"{name}-r") is None
    lb = standin.service("cluster-rw-lb")
    assert lb is not None
    assert lb["spec"]["type"] == "LoadBalancer"
    assert lb["metadata"]["labels"]["cnpg.io/isManaged"] == "true"
    assert lb["metadata"]["labels"]["cnpg.io/cluster"] == name
    assert [r["uid"] for r in lb["metadata"]["ownerReferences"]] == [uid]

    creds = standin.credentials(name, "cluster-rw-lb")
    assert creds.host == "127.0.0.1"
    assert values["port"] == str(creds.port) == str(rw["spec"]["ports"][0]["port"])
    address = f"{name}-rw.{standin.namespace}:{creds.port}"
    assert values["uri"] == f"postgresql://{role}:{creds.password}@{address}/{role}"
    assert values["jdbc-uri"] == f"jdbc:postgresql://{address}/{role}?password={creds.password}&user={role}"
    assert values["pgpass"] == f"{name}-rw:{creds.port}:{role}:{role}:{creds.password}\n"
    creds.sql(SEED_SQL)
    assert creds.sql("select nextval('hibernate_sequence'); select count(*) from Todo") == "1\n0"
    assert creds.sql("select current_user, current_database()") == f"{role}|{role}"

    # Re-observing a Cluster whose objects are all in place changes nothing.
    def versions() -> list[str]:
        found: list[dict[str, Any] | None] = [
            standin.client.get(contract.API_VERSION, contract.KIND, name, standin.namespace)
        ]
        found += [
            standin.secret(f"{name}-app"),
            standin.service(f"{name}-rw"),
            standin.service("cluster-rw-lb"),
        ]
        return [str((o or {}).get("metadata", {}).get("resourceVersion")) for o in found]

    before = versions()
    standin.controller.reconcile(SERVICE_CLUSTER, standin.namespace, name, force=True)
    standin.controller.reconcile(SERVICE_CLUSTER, standin.namespace, name)
    assert versions() == before

    no_password_logged(caplog, creds.password)


def test_two_clusters_share_a_server_but_not_credentials_nor_databases(standin: StandIn) -> None:
    standin.apply(plain_cluster("one", standin.namespace))
    standin.apply(plain_cluster("two", standin.namespace))
    standin.wait_ready("one")
    standin.wait_ready("two")

    first, second = (standin.secret_credentials(n) for n in ("one", "two"))
    assert first.password != second.password
    assert first.port == second.port  # one server per service cluster
    assert (first.user, first.dbname) == (contract.sql_name(standin.namespace, "one"),) * 2
    assert (second.user, second.dbname) == (contract.sql_name(standin.namespace, "two"),) * 2
    for n in ("one", "two"):
        assert standin.service(f"{n}-ro") is not None  # the default services are all there
        assert standin.service(f"{n}-r") is not None

    first.sql("create table only_in_one (x int)")
    assert second.sql("select count(*) from pg_tables where tablename = 'only_in_one'") == "0"
    assert first.sql("select current_user, current_database()") == f"{first.user}|{first.dbname}"
    # Each role reaches its own database only: not the other's, nor the server's own ones.
    for creds, other in ((first, second), (second, first)):
        for dbname in (other.dbname, "postgres", "template1"):
            with pytest.raises(FleetError, match="permission denied for database") as denied:
                replace(creds, dbname=dbname).sql("select 1")
            assert creds.password not in str(denied.value)
        with pytest.raises(FleetError, match="password authentication failed"):
            replace(creds, password=other.password).sql("select 1")
    assert [s.root for s in cnpg.servers(standin.root)] == [standin.root / SERVICE_CLUSTER]


def test_deleting_a_cluster_drops_its_database_and_objects_and_a_new_one_starts_empty(
    standin: StandIn,
) -> None:
    standin.apply(plain_cluster("doomed", standin.namespace))
    standin.wait_ready("doomed")
    before = standin.secret_credentials("doomed")
    before.sql("create table kept_until_deleted (x int)")
    server = standin.controller.databases[SERVICE_CLUSTER].server

    standin.client.delete(contract.API_VERSION, contract.KIND, "doomed", standin.namespace)
    standin.wait_gone(contract.KIND, "doomed")
    assert before.dbname not in pgroles.database_comments(server)
    with pytest.raises(FleetError, match="password authentication failed"):
        before.sql("select 1")  # the role is gone with its database
    # kube-controller-manager's garbage collector removes what the Cluster owned.
    standin.wait_gone("Secret", "doomed-app", "v1")
    for suffix in ("rw", "ro", "r"):
        standin.wait_gone("Service", f"doomed-{suffix}", "v1")

    standin.apply(plain_cluster("doomed", standin.namespace))  # re-created: new uid, new, empty database
    standin.wait_ready("doomed")
    after = standin.secret_credentials("doomed")
    assert (after.user, after.dbname) == (before.user, before.dbname)
    assert after.password != before.password
    assert after.sql("select count(*) from pg_tables where tablename = 'kept_until_deleted'") == "0"


def test_existing_secret_password_survives_a_lost_server(standin: StandIn) -> None:
    standin.apply(seed_cluster("keep", standin.namespace))
    standin.wait_ready("cluster-keep")
    before = standin.credentials("cluster-keep", "cluster-rw-lb")
    before.sql("select 1")

    standin.halt()  # the controller is down ...
    standin.controller.databases[SERVICE_CLUSTER].server.destroy()  # ... and the data lost
    restarted = StandInController({SERVICE_CLUSTER: standin.client}, standin.root, watch_timeout=2)
    standin.controller = restarted
    standin.start()
    assert restarted.synced[SERVICE_CLUSTER].wait(WAIT), "the restarted controller did not sync its Clusters"

    after = standin.credentials("cluster-keep", "cluster-rw-lb")
    assert (after.user, after.password) == (before.user, before.password)
    assert after.sql("select current_user") == contract.sql_name(standin.namespace, "cluster-keep")
