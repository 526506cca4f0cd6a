"""When things go wrong on the local fleet: a workload cluster that cannot be reached, and
reconcile healing deleted and stale objects while otherwise writing nothing.

The chain itself, flow by flow, is in ``test_dbaas.py``.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleetflow_dev.cnpg import chart_dir

from fleetflow.databases.names import APP_NAMESPACE, SERVICE_CLUSTER_ANNOTATION
from fleetflow.errors import APIUnavailableError
from fleetflow.flows.deploy_app import deploy_app
from fleetflow.flows.deprovision_database import deprovision_database
from fleetflow.flows.install_operator import install_operator
from fleetflow.flows.provision_database import provision_database
from fleetflow.flows.reconcile import reconcile
from fleetflow.flows.register_cluster import register_cluster
from fleetflow.kube import Kubeconfig
from fleetflow.labels import LabelEdit
from fleetflow.registry import Registry
from tests.support.dbaas_support import cli, decoded, forget, seeded_fleet, versions
from tests.support.local_fleet import LocalFleet

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _use_the_local_fleet(monkeypatch: pytest.MonkeyPatch, local_fleet: LocalFleet) -> None:
    monkeypatch.setenv("KUBECONFIG", str(local_fleet.kubeconfig))
    monkeypatch.setenv("FLEETFLOW_MGMT_CONTEXT", "mgmt")


@pytest.fixture(scope="module")
def seed(
    local_fleet: LocalFleet, prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """The seed's three clusters registered, and the CloudNativePG stand-in running for service-cluster."""
    with seeded_fleet(local_fleet, tmp_path_factory) as registry:
        yield registry


@pytest.fixture(scope="module")
def operator(seed: Registry) -> None:
    """The stand-in's chart (its CRD) installed on the service cluster; idempotent."""
    install_operator(chart=str(chart_dir()), repository=None, version=None)


@pytest.fixture
def database(seed: Registry, operator: None) -> dict[str, Any]:
    """workload-cluster's database, provisioned (idempotently) and its credentials delivered."""
    ready: dict[str, Any] = provision_database(cluster="workload-cluster", timeout_seconds=120)
    return ready


@pytest.fixture
def app(seed: Registry, database: dict[str, Any]) -> dict[str, Any]:
    """workload-cluster labelled type=app and its todo-table Job applied; idempotent."""
    seed.edit_labels("workload-cluster", LabelEdit.parse(["type=app"]))
    [deployed] = deploy_app(cluster="workload-cluster")
    return dict(deployed)


@pytest.fixture
def unreachable_workload(
    seed: Registry, operator: None, local_fleet: LocalFleet, tmp_path: Path
) -> Iterator[str]:
    """A cluster with a database and credentials in mgmt, whose own API server then cannot be
    reached: its stored kubeconfig names a closed port."""
    # A fresh name each time: the previous test's namespace may still be terminating.
    name = f"wl-unreachable-{uuid.uuid4().hex[:6]}"
    register_cluster(
        name=name, context="workload-cluster", labels={"postgres": "required"}, mgmt_context="mgmt"
    )
    try:
        provision_database(cluster=name, timeout_seconds=120)
        config = yaml.safe_load(local_fleet.kubeconfig.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = "https://127.0.0.1:1"
        broken = tmp_path / "kubeconfig"
        broken.write_text(yaml.safe_dump(config))
        seed.store_kubeconfig(name, Kubeconfig.from_file(broken, "workload-cluster"))
        yield name
    finally:
        seed.store_kubeconfig(name, Kubeconfig.from_file(local_fleet.kubeconfig, "workload-cluster"))
        forget(seed, name)


UNREACHABLE = r"[^:]* workload-cluster: cannot reach the API server \(\w+\)"


def test_show_databases_reports_what_it_could_not_read(unreachable_workload: str) -> None:
    name = unreachable_workload
    listing = cli("show", "databases")
    assert listing.returncode == 1, "a listing with unread parts must not exit 0"
    row = next(line for line in listing.stdout.splitlines() if line.startswith(name))
    assert re.search(rf"   mgmt; workload unknown: {UNREACHABLE}$", row), row
    assert re.match(r"^error: could not read everything about .*\(reasons above\)$", listing.stderr)
    assert name in listing.stderr


def test_deprovisioning_an_unreachable_cluster_fails_saying_so_and_deletes_nothing(
    seed: Registry, unreachable_workload: str, local_fleet: LocalFleet
) -> None:
    """The label's database is a request on the cluster: its deletion goes through that object,
    so while the cluster cannot be reached nothing is half done and a later run does it all."""
    name = unreachable_workload
    seed.edit_labels(name, LabelEdit.parse(["postgres-"]))
    with pytest.raises(APIUnavailableError, match=UNREACHABLE):
        deprovision_database(cluster=name, deletion_policy="Delete")
    service, mgmt = local_fleet.client("service-cluster"), local_fleet.client("mgmt")
    assert service.get_or_none("postgresql.cnpg.io/v1", "Cluster", f"cluster-{name}", name) is not None
    assert mgmt.get_or_none("v1", "Secret", "pg-credentials", name) is not None
    placed = seed.require(name).annotations.get(SERVICE_CLUSTER_ANNOTATION)
    assert placed == "service-cluster", "the placement stays, so a later run can finish"


def test_reconcile_heals_deletions_and_rotations_and_otherwise_writes_nothing(
    seed: Registry, app: dict[str, Any], local_fleet: LocalFleet
) -> None:
    chart = {"chart": str(chart_dir()), "repository": None, "version": None}
    mgmt, workload = local_fleet.client("mgmt"), local_fleet.client("workload-cluster")
    service = local_fleet.client("service-cluster")
    assert mgmt.delete("v1", "Secret", "pg-credentials", "workload-cluster")
    assert workload.delete("batch/v1", "Job", "todo-table", APP_NAMESPACE)
    repaired = reconcile(**chart, timeout_seconds=120)
    assert repaired["credentials"] == ["workload-cluster"]
    assert repaired["app"] == ["workload-cluster"]
    assert mgmt.get_or_none("v1", "Secret", "pg-credentials", "workload-cluster") is not None
    assert workload.get_or_none("batch/v1", "Job", "todo-table", APP_NAMESPACE) is not None

    # A rotated source secret makes the delivered copy stale; reconcile rewrites it.
    # A random password, as a real one: a guessable one ("rotated-password") was later "found" by
    # the secrets search in an error message that named a request "...-rotated-passw-...".
    password = "rotated-" + uuid.uuid4().hex
    rotated = base64.b64encode(password.encode()).decode()
    service.merge_patch(
        "v1", "Secret", "cluster-workload-cluster-app", "workload-cluster", {"data": {"password": rotated}}
    )
    assert reconcile(**chart, timeout_seconds=120)["credentials"] == ["workload-cluster"]
    assert decoded(mgmt.get("v1", "Secret", "pg-credentials", "workload-cluster"))["password"] == password

    before = versions(local_fleet)
    assert not any(reconcile(**chart, timeout_seconds=120).values()), "a healthy fleet needs no repair"
    assert versions(local_fleet) == before
