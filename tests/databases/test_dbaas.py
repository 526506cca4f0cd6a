"""The seed's chain, flow by flow, on the local fleet with a real Prefect server and real PostgreSQL.

install-operator -> provision-database -> fetch-credentials -> deploy-app, then the delivered
credentials are proven by connecting with them and running the Job's own SQL. What happens when
a cluster cannot be reached, and reconcile's healing, are in ``test_dbaas_healing.py``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleetflow_dev.cnpg import chart_dir

from fleetflow.databases.names import APP_NAMESPACE
from fleetflow.errors import PermanentError
from fleetflow.flows.deploy_app import deploy_app
from fleetflow.flows.fetch_credentials import fetch_credentials
from fleetflow.flows.install_operator import install_operator
from fleetflow.flows.provision_database import provision_database
from fleetflow.flows.register_cluster import register_cluster
from fleetflow.labels import LabelEdit
from fleetflow.registry import Registry
from fleetflow.templating import TemplateError
from tests.support.dbaas_support import (
    FLEETFLOW,
    cli,
    decoded,
    forget,
    label_database,
    psql,
    seeded_fleet,
    versions,
)
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


def test_the_seed_chain_flow_by_flow(seed: Registry, local_fleet: LocalFleet, prefect_api: str) -> None:
    installed = install_operator(chart=str(chart_dir()), repository=None, version=None)
    assert [(r["cluster"], r["release"], r["namespace"]) for r in installed] == [
        ("service-cluster", "cnpg", "cnpg-system")
    ]
    shown = cli("show", "addons").stdout.splitlines()
    assert shown[0].split()[:3] == ["CLUSTER", "RESOURCE", "TYPE"]
    row = next(line for line in shown if line.startswith("service-cluster/service-cluster"))
    for cell in ("helm chart", "cnpg-system", " cnpg ", "flow/install-operator"):
        assert cell in row

    ready = provision_database(cluster="workload-cluster", timeout_seconds=120)
    assert ready["service_cluster"] == "service-cluster"
    # The label is a Database request on the cluster, listed with its READY state like any.
    request = label_database(local_fleet, "workload-cluster")
    assert request is not None
    assert request["metadata"]["labels"]["fleetflow.io/requested-by"] == "cluster-label"
    ready_condition = next(c for c in request["status"]["conditions"] if c["type"] == "Ready")
    assert ready_condition["status"] == "True"
    assert request["status"]["serviceCluster"] == "service-cluster"
    service = local_fleet.client("service-cluster")
    cluster = service.get("postgresql.cnpg.io/v1", "Cluster", "cluster-workload-cluster", "workload-cluster")
    assert cluster["metadata"]["labels"] == {"cluster": "workload-cluster-workload-cluster"}
    assert cluster["spec"]["instances"] == 3
    assert cluster["spec"]["bootstrap"]["initdb"]["database"] == "todo"
    assert cluster["spec"]["managed"]["services"]["disabledDefaultServices"] == ["ro", "r"]

    # provision-database delivered the credentials itself; fetch-credentials finds them current.
    assert ready["credentials"] == "mgmt:workload-cluster"
    assert fetch_credentials(cluster="workload-cluster")["changed"] is False
    mgmt = local_fleet.client("mgmt")
    creds = decoded(mgmt.get("v1", "Secret", "pg-credentials", "workload-cluster"))
    assert set(creds) == {"user", "password"}
    address = mgmt.get("v1", "ConfigMap", "pg-loadbalancer-data", "workload-cluster")["data"]
    assert address["external-ip"] == "127.0.0.1"
    assert f"{address['external-ip']}:{address['port']}" == ready["endpoint"]
    source = service.get("v1", "Secret", "cluster-workload-cluster-app", "workload-cluster")
    assert address["dbname"] == decoded(source)["dbname"], "the app is told the database's real name"

    seed.edit_labels("workload-cluster", LabelEdit.parse(["type=app"]))
    [deployed] = deploy_app(cluster="workload-cluster")
    assert deployed["job"] == "todo/todo-table"
    workload = local_fleet.client("workload-cluster")
    job = workload.get("batch/v1", "Job", "todo-table", APP_NAMESPACE)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert creds["password"] not in str(job)
    assert container["env"] == [
        {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "pg-credentials", "key": "password"}}}
    ]

    # The credentials the workload cluster holds really open the database, and the Job's SQL runs.
    delivered = decoded(workload.get("v1", "Secret", "pg-credentials", APP_NAMESPACE))
    args = dict(a.split("=", 1) for a in container["args"] if a.startswith("--") and "=" in a)
    done = psql(
        args["--host"],
        args["--port"],
        args["--username"],
        delivered["password"],
        args["--dbname"],
        f"--command={args['--command']}",
    )
    assert done.returncode == 0, done.stderr
    tables = psql(
        args["--host"],
        args["--port"],
        args["--username"],
        delivered["password"],
        args["--dbname"],
        "--tuples-only",
        "--command=select count(*) from todo",
    )
    assert tables.stdout.strip() == "0", tables.stderr
    host, port, user, dbname = args["--host"], args["--port"], args["--username"], args["--dbname"]
    wrong = psql(host, port, user, "not-the-password", dbname, "-c", "select 1")
    assert wrong.returncode != 0

    # Re-running any flow changes nothing.
    before = versions(local_fleet)
    assert [
        r["changed"] for r in install_operator(chart=str(chart_dir()), repository=None, version=None)
    ] == [False]
    provision_database(cluster="workload-cluster", timeout_seconds=60)
    assert fetch_credentials(cluster="workload-cluster")["changed"] is False
    assert deploy_app(cluster="workload-cluster")[0]["job_outcome"] == "unchanged"
    assert versions(local_fleet) == before

    listing = cli("show", "databases")
    assert listing.returncode == 0, listing.stderr
    line = next(x for x in listing.stdout.splitlines() if x.startswith("workload-cluster"))
    assert line.split() == [
        "workload-cluster",
        "service-cluster",
        "Cluster",
        "in",
        "healthy",
        "state",
        ready["endpoint"],
        "mgmt,workload",
    ]
    assert creds["password"] not in listing.stdout

    # No secret value reached Prefect's database, its result storage or any log line.
    db_url = (
        __import__("prefect.settings", fromlist=["x"]).get_current_settings().server.database.connection_url
    )
    db_dir = Path(
        str(db_url.get_secret_value() if hasattr(db_url, "get_secret_value") else db_url).split("///")[-1]
    ).parent
    stored = [p for p in db_dir.glob("*") if p.is_file()]
    storage = Path(os.path.expanduser("~/.prefect/storage"))
    stored += [p for p in storage.rglob("*") if p.is_file()] if storage.exists() else []
    assert stored, "found no Prefect database to search"
    for path in stored:
        assert creds["password"].encode() not in path.read_bytes(), f"password found in {path}"


def test_two_workload_clusters_get_two_databases(
    seed: Registry, operator: None, local_fleet: LocalFleet
) -> None:
    names = ["wl-a", "wl-b"]
    for name in names:
        register_cluster(
            name=name, context="workload-cluster", labels={"postgres": "required"}, mgmt_context="mgmt"
        )
    try:
        endpoints = [provision_database(cluster=n, timeout_seconds=120)["endpoint"] for n in names]
        mgmt = local_fleet.client("mgmt")
        creds = [decoded(mgmt.get("v1", "Secret", "pg-credentials", n)) for n in names]
        dbs = [mgmt.get("v1", "ConfigMap", "pg-loadbalancer-data", n)["data"]["dbname"] for n in names]
        assert creds[0]["password"] != creds[1]["password"]
        assert dbs[0] != dbs[1]
        for cred, endpoint, db in zip(creds, endpoints, dbs, strict=True):
            host, port = endpoint.split(":")
            assert psql(host, port, cred["user"], cred["password"], db, "-c", "select 1").returncode == 0
        host, port = endpoints[0].split(":")
        crossed = psql(host, port, creds[1]["user"], creds[1]["password"], dbs[0], "-c", "select 1")
        assert crossed.returncode != 0, "one cluster's credentials must not open the other's database"
    finally:
        for name in names:
            forget(seed, name)


def test_a_template_error_fails_at_once_with_the_file_named(seed: Registry, tmp_path: Path) -> None:
    (tmp_path / "cnpg-cluster.yaml.j2").write_text(
        "apiVersion: v1\nkind: Cluster\nmetadata:\n  name: {{ nope }}\n"
    )
    with pytest.raises(TemplateError, match=r"cnpg-cluster\.yaml\.j2") as info:
        provision_database(cluster="workload-cluster", template_dir=str(tmp_path))
    assert "nope" in str(info.value)


def test_without_a_service_cluster_provisioning_says_so(seed: Registry, local_fleet: LocalFleet) -> None:
    paused = [r.name for r in seed.list() if r.labels.get("type") == "services"]
    for name in paused:
        seed.edit_labels(name, LabelEdit.parse(["type=services-paused"]))
    register_cluster(
        name="wl-lonely", context="workload-cluster", labels={"postgres": "required"}, mgmt_context="mgmt"
    )
    try:
        with pytest.raises(
            PermanentError, match="no service cluster for 'wl-lonely': no registered cluster matches"
        ):
            provision_database(cluster="wl-lonely")
        failed = label_database(local_fleet, "wl-lonely")
        assert failed is not None
        assert failed["status"]["phase"] == "Failed", "its status says why"
    finally:
        for name in paused:
            seed.edit_labels(name, LabelEdit.parse(["type=services"]))
        forget(seed, "wl-lonely")


def test_the_cli_runs_a_flow_that_emits_events_without_prefect_api_url(database: dict[str, Any]) -> None:
    """With no PREFECT_API_URL the CLI runs the flow on a temporary Prefect server, events included."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    done = subprocess.run(
        [FLEETFLOW, "run", "provision-database", "workload-cluster", "--timeout", "120"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "database workload-cluster/cluster-workload-cluster for workload-cluster ready on "
        f"service-cluster at {database['endpoint']}"
    )
    assert "no PREFECT_API_URL: running provision-database on a temporary Prefect server" in done.stderr
