"""The label path is a Database request: ``postgres=required`` on a cluster shows a Database on it.

Labelled, the cluster gets the Database ``fleetflow/<cluster>`` (as ``kubectl get databases -A``
lists it, READY True) and the seed's ``pg-credentials`` / ``pg-loadbalancer-data`` in the
management cluster, which open the database. The label removed, the Database goes through the
same finalise as any request's deletion: Retain keeps the CNPG Cluster, marked orphaned, and the
label back adopts it with its data; Delete removes it. The flows run as the automations run them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fleetflow_dev.cnpg import chart_dir

from fleetflow.databases import crd
from fleetflow.databases.names import CNPG_API, ORPHANED, SERVICE_CLUSTER_ANNOTATION
from fleetflow.flows.deprovision_database import deprovision_database
from fleetflow.flows.install_operator import install_operator
from fleetflow.flows.provision_database import provision_database
from fleetflow.flows.register_cluster import register_cluster
from fleetflow.labels import LabelEdit
from fleetflow.registry import Registry
from tests.support.dbaas_support import decoded, forget, psql, seeded_fleet
from tests.support.local_fleet import LocalFleet

pytestmark = pytest.mark.integration

WORKLOAD = "workload-cluster"


@pytest.fixture(autouse=True)
def _use_the_local_fleet(monkeypatch: pytest.MonkeyPatch, local_fleet: LocalFleet) -> None:
    monkeypatch.setenv("KUBECONFIG", str(local_fleet.kubeconfig))
    monkeypatch.setenv("FLEETFLOW_MGMT_CONTEXT", "mgmt")


@pytest.fixture(scope="module")
def seed(
    local_fleet: LocalFleet, prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    with seeded_fleet(local_fleet, tmp_path_factory) as registry:
        install_operator(chart=str(chart_dir()), repository=None, version=None)
        yield registry


def databases(local_fleet: LocalFleet) -> dict[str, str]:
    """``kubectl get databases -A`` on the workload cluster: NAMESPACE/NAME -> READY."""
    items, _ = local_fleet.client(WORKLOAD).list(crd.API_VERSION, crd.KIND)
    ready = {}
    for obj in items:
        conditions = (obj.get("status") or {}).get("conditions") or []
        shown = next((c["status"] for c in conditions if c["type"] == "Ready"), "")
        ready[f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"] = shown
    return ready


def sql(local_fleet: LocalFleet, cluster: str, command: str) -> str:
    """Run ``command`` with the credentials and address delivered to the management cluster."""
    mgmt = local_fleet.client("mgmt")
    creds = decoded(mgmt.get("v1", "Secret", "pg-credentials", cluster))
    address = mgmt.get("v1", "ConfigMap", "pg-loadbalancer-data", cluster)["data"]
    done = psql(
        address["external-ip"],
        address["port"],
        creds["user"],
        creds["password"],
        address["dbname"],
        "--tuples-only",
        f"--command={command}",
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def cnpg(local_fleet: LocalFleet, cluster: str) -> dict[str, Any] | None:
    return local_fleet.client("service-cluster").get_or_none(
        CNPG_API, "Cluster", f"cluster-{cluster}", cluster
    )


def test_the_label_is_a_database_request_and_its_removal_retains_it_for_readoption(
    seed: Registry, local_fleet: LocalFleet
) -> None:
    mgmt = local_fleet.client("mgmt")
    provision_database(cluster=WORKLOAD, timeout_seconds=120, instances=1)
    assert databases(local_fleet)[f"fleetflow/{WORKLOAD}"] == "True"
    assert sql(local_fleet, WORKLOAD, "select 1") == "1"
    sql(local_fleet, WORKLOAD, "create table if not exists kept (v text); insert into kept values ('before')")
    created = cnpg(local_fleet, WORKLOAD)
    assert created is not None

    try:
        seed.edit_labels(WORKLOAD, LabelEdit.parse(["postgres-"]))
        outcome = deprovision_database(cluster=WORKLOAD, deletion_policy="Retain")
        assert outcome.startswith(f"Retain: retained CloudNativePG Cluster {WORKLOAD}/cluster-{WORKLOAD}")
        assert f"fleetflow/{WORKLOAD}" not in databases(local_fleet), "the label's Database is gone"
        retained = cnpg(local_fleet, WORKLOAD)
        assert retained is not None, "Retain keeps the CNPG Cluster"
        assert ORPHANED in retained["metadata"]["annotations"]
        assert mgmt.get_or_none("v1", "Secret", "pg-credentials", WORKLOAD) is None, "credentials withdrawn"
        assert mgmt.get_or_none("v1", "ConfigMap", "pg-loadbalancer-data", WORKLOAD) is None
        again = deprovision_database(cluster=WORKLOAD, deletion_policy="Retain")
        assert again.startswith("already retained"), again
    finally:
        seed.edit_labels(WORKLOAD, LabelEdit.parse(["postgres=required"]))

    provision_database(cluster=WORKLOAD, timeout_seconds=120, instances=1)
    assert databases(local_fleet)[f"fleetflow/{WORKLOAD}"] == "True"
    adopted = cnpg(local_fleet, WORKLOAD)
    assert adopted is not None
    assert adopted["metadata"]["uid"] == created["metadata"]["uid"], "the same database, adopted back"
    assert ORPHANED not in (adopted["metadata"].get("annotations") or {})
    assert sql(local_fleet, WORKLOAD, "select v from kept") == "before", "with its data"


def test_removing_the_label_with_delete_removes_the_database(seed: Registry, local_fleet: LocalFleet) -> None:
    name = "wl-label-delete"
    register_cluster(name=name, context=WORKLOAD, labels={"postgres": "required"}, mgmt_context="mgmt")
    try:
        provision_database(cluster=name, timeout_seconds=120, instances=1)
        assert databases(local_fleet)[f"fleetflow/{name}"] == "True", "each registered name has its own"
        assert sql(local_fleet, name, "select 1") == "1"
        seed.edit_labels(name, LabelEdit.parse(["postgres-"]))
        outcome = deprovision_database(cluster=name, deletion_policy="Delete")
        assert outcome.startswith(f"Delete: deleted CloudNativePG Cluster {name}/cluster-{name}"), outcome
        assert f"fleetflow/{name}" not in databases(local_fleet)
        assert cnpg(local_fleet, name) is None
        assert local_fleet.client("mgmt").get_or_none("v1", "Secret", "pg-credentials", name) is None
        assert SERVICE_CLUSTER_ANNOTATION not in seed.require(name).annotations
        assert deprovision_database(cluster=name, deletion_policy="Delete") == "no database: nothing to do"
    finally:
        forget(seed, name)
