"""Retain marks a database's CNPG Cluster orphaned once; deprovisioning it again writes nothing.

deprovision-database runs on every label event of a cluster without ``postgres=required`` and
on every reconcile (every few minutes): re-stamping the orphan mark each time wrote every
retained Cluster over and over, and moved the mark's time away from the orphaning.

The mark is backdated by the test before the second run, so that a re-stamp would change it
even within the same second (a merge patch that changes nothing is not a write).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fleetflow_dev.cnpg import chart_dir

from fleetflow.databases.names import CNPG_API
from fleetflow.databases.names import ORPHANED as ORPHANED_ANNOTATION
from fleetflow.flows.deprovision_database import deprovision_database
from fleetflow.flows.install_operator import install_operator
from fleetflow.flows.provision_database import provision_database
from fleetflow.flows.register_cluster import register_cluster
from fleetflow.labels import LabelEdit
from fleetflow.registry import Registry
from tests.support.dbaas_support import forget, seeded_fleet
from tests.support.local_fleet import LocalFleet

pytestmark = pytest.mark.integration

BACKDATED = "2000-01-01T00:00:00Z"


@pytest.fixture(autouse=True)
def _use_the_local_fleet(monkeypatch: pytest.MonkeyPatch, local_fleet: LocalFleet) -> None:
    monkeypatch.setenv("KUBECONFIG", str(local_fleet.kubeconfig))
    monkeypatch.setenv("FLEETFLOW_MGMT_CONTEXT", "mgmt")


@pytest.fixture(scope="module")
def seed(
    local_fleet: LocalFleet, prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    with seeded_fleet(local_fleet, tmp_path_factory) as registry:
        yield registry


@pytest.fixture
def released(seed: Registry, local_fleet: LocalFleet) -> Iterator[str]:
    """A fresh cluster whose database was provisioned, then its label ``postgres`` removed."""
    install_operator(chart=str(chart_dir()), repository=None, version=None)
    name = f"wl-retain-{uuid.uuid4().hex[:6]}"
    register_cluster(
        name=name, context="workload-cluster", labels={"postgres": "required"}, mgmt_context="mgmt"
    )
    try:
        provision_database(cluster=name, timeout_seconds=120)
        seed.edit_labels(name, LabelEdit.parse(["postgres-"]))
        yield name
    finally:
        forget(seed, name)
        local_fleet.client("service-cluster").delete(CNPG_API, "Cluster", f"cluster-{name}", name)


def test_retain_marks_the_cluster_orphaned_once_and_then_writes_nothing(
    released: str, local_fleet: LocalFleet
) -> None:
    name = released
    service = local_fleet.client("service-cluster")
    where = f"CloudNativePG Cluster {name}/cluster-{name} on service-cluster (orphaned, data kept)"

    assert deprovision_database(cluster=name, deletion_policy="Retain").startswith(
        f"Retain: retained {where}"
    )
    marked = service.get(CNPG_API, "Cluster", f"cluster-{name}", name)
    assert ORPHANED_ANNOTATION in marked["metadata"]["annotations"]

    backdated = service.merge_patch(
        CNPG_API,
        "Cluster",
        f"cluster-{name}",
        name,
        {"metadata": {"annotations": {ORPHANED_ANNOTATION: BACKDATED}}},
    )
    again = deprovision_database(cluster=name, deletion_policy="Retain")
    after = service.get(CNPG_API, "Cluster", f"cluster-{name}", name)
    assert after["metadata"]["resourceVersion"] == backdated["metadata"]["resourceVersion"], (
        "an already retained Cluster must not be written again"
    )
    assert after["metadata"]["annotations"][ORPHANED_ANNOTATION] == BACKDATED, "the mark keeps its time"
    assert again == f"already retained {where}"
