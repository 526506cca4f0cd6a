"""The seed's chain, flow by flow, on the local fleet with a real Prefect server and real PostgreSQL.

install-operator -> provision-database -> fetch-credentials -> deploy-app, then the delivered
credentials are proven by connecting with them and running the Job's own SQL.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devfleet.cnpg import CHART_DIR as LOCAL_CHART
from devfleet.cnpg import controller
from fleetflow.dbaas.names import APP_NAMESPACE, SERVICE_CLUSTER_ANNOTATION
from fleetflow.errors import APIUnavailableError, PermanentError
from fleetflow.kube import Kubeconfig
from fleetflow.labels import LabelEdit
from fleetflow.registry import Registry
from fleetflow.templating import TemplateError
from flows.deploy_app import deploy_app
from flows.deprovision_database import deprovision_database
from flows.fetch_credentials import fetch_credentials
from flows.install_operator import install_operator
from flows.provision_database import provision_database
from flows.reconcile import reconcile
from flows.register_cluster import register_cluster
from tests.integration.conftest import LocalFleet

pytestmark = pytest.mark.integration

FLEETFLOW = str(Path(sys.executable).parent / "fleetflow")
PSQL = "/usr/bin/psql"


@pytest.fixture(autouse=True)
def _use_the_local_fleet(monkeypatch: pytest.MonkeyPatch, local_fleet: LocalFleet) -> None:
    monkeypatch.setenv("KUBECONFIG", str(local_fleet.kubeconfig))
    monkeypatch.setenv("FLEETFLOW_MGMT_CONTEXT", "mgmt")


@pytest.fixture(scope="module")
def seed(
    local_fleet: LocalFleet, prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """The seed's three clusters registered, and the CloudNativePG stand-in running for service-cluster."""
    patch = pytest.MonkeyPatch()
    patch.setenv("KUBECONFIG", str(local_fleet.kubeconfig))
    patch.setenv("FLEETFLOW_MGMT_CONTEXT", "mgmt")
    registry = Registry(local_fleet.client("mgmt"))
    registry.install()
    for name, labels in (
        ("mgmt", {"type": "mgmt"}),
        ("service-cluster", {"type": "services"}),
        ("workload-cluster", {"postgres": "required"}),
    ):
        register_cluster(name=name, context=name, labels=labels, mgmt_context="mgmt")
    stop = threading.Event()
    root = tmp_path_factory.mktemp("cnpg-standin")
    thread = threading.Thread(
        target=controller.run, args=(local_fleet.kubeconfig, ["service-cluster"], stop, root)
    )
    thread.start()
    try:
        yield registry
    finally:
        stop.set()
        thread.join(60)
        controller.destroy_servers(root)
        patch.undo()


@pytest.fixture(scope="module")
def operator(seed: Registry) -> None:
    """The stand-in's chart (its CRD) installed on the service cluster; idempotent."""
    install_operator(chart=str(LOCAL_CHART), repository=None, version=None)


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


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLEETFLOW, *args], env=dict(os.environ), capture_output=True, text=True, timeout=300, check=False
    )


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def psql(
    host: str, port: str, user: str, password: str, dbname: str, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(
        [
            PSQL,
            f"--host={host}",
            f"--port={port}",
            f"--username={user}",
            f"--dbname={dbname}",
            "--no-password",
            "--set=ON_ERROR_STOP=1",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def versions(local_fleet: LocalFleet) -> dict[str, str]:
    """resourceVersions of everything the chain writes: re-running a flow must change none."""
    service, mgmt, workload = (local_fleet.client(n) for n in ("service-cluster", "mgmt", "workload-cluster"))
    objs = {
        "cluster": service.get(
            "postgresql.cnpg.io/v1", "Cluster", "cluster-workload-cluster", "workload-cluster"
        ),
        "mgmt-secret": mgmt.get("v1", "Secret", "pg-credentials", "workload-cluster"),
        "mgmt-config": mgmt.get("v1", "ConfigMap", "pg-loadbalancer-data", "workload-cluster"),
        "app-secret": workload.get("v1", "Secret", "pg-credentials", APP_NAMESPACE),
        "job": workload.get("batch/v1", "Job", "todo-table", APP_NAMESPACE),
    }
    return {k: v["metadata"]["resourceVersion"] for k, v in objs.items()}


def test_the_seed_chain_flow_by_flow(seed: Registry, local_fleet: LocalFleet, prefect_api: str) -> None:
    installed = install_operator(chart=str(LOCAL_CHART), repository=None, version=None)
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
        r["changed"] for r in install_operator(chart=str(LOCAL_CHART), repository=None, version=None)
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
        service = local_fleet.client("service-cluster")
        for name in names:
            service.delete("postgresql.cnpg.io/v1", "Cluster", f"cluster-{name}", name)
            seed.deregister(name, delete_namespace=True)


def test_a_template_error_fails_at_once_with_the_file_named(seed: Registry, tmp_path: Path) -> None:
    (tmp_path / "cnpg-cluster.yaml.j2").write_text(
        "apiVersion: v1\nkind: Cluster\nmetadata:\n  name: {{ nope }}\n"
    )
    with pytest.raises(TemplateError, match=r"cnpg-cluster\.yaml\.j2") as info:
        provision_database(cluster="workload-cluster", template_dir=str(tmp_path))
    assert "nope" in str(info.value)


def test_without_a_service_cluster_provisioning_says_so(seed: Registry) -> None:
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
    finally:
        for name in paused:
            seed.edit_labels(name, LabelEdit.parse(["type=services"]))
        seed.deregister("wl-lonely", delete_namespace=True)


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
        local_fleet.client("service-cluster").delete(
            "postgresql.cnpg.io/v1", "Cluster", f"cluster-{name}", name
        )
        seed.deregister(name, delete_namespace=True)


UNREACHABLE = r"[^:]* workload-cluster: cannot reach the API server \(\w+\)"


def test_show_databases_reports_what_it_could_not_read(unreachable_workload: str) -> None:
    name = unreachable_workload
    listing = cli("show", "databases")
    assert listing.returncode == 1, "a listing with unread parts must not exit 0"
    row = next(line for line in listing.stdout.splitlines() if line.startswith(name))
    assert re.search(rf"   mgmt; workload unknown: {UNREACHABLE}$", row), row
    assert re.match(r"^error: could not read everything about .*\(reasons above\)$", listing.stderr)
    assert name in listing.stderr


def test_delete_policy_fails_saying_which_credentials_it_could_not_withdraw(
    seed: Registry, unreachable_workload: str, local_fleet: LocalFleet
) -> None:
    name = unreachable_workload
    seed.edit_labels(name, LabelEdit.parse(["postgres-"]))
    said = (
        rf"^deleted {name}/cluster-{name} on service-cluster, "
        rf"but could not withdraw its credentials from {name}: {UNREACHABLE}$"
    )
    with pytest.raises(APIUnavailableError, match=said):
        deprovision_database(cluster=name, deletion_policy="Delete")
    service, mgmt = local_fleet.client("service-cluster"), local_fleet.client("mgmt")
    assert service.get_or_none("postgresql.cnpg.io/v1", "Cluster", f"cluster-{name}", name) is None
    assert mgmt.get_or_none("v1", "Secret", "pg-credentials", name) is None, "withdrawn where reachable"
    placed = seed.require(name).annotations.get(SERVICE_CLUSTER_ANNOTATION)
    assert placed == "service-cluster", "the placement stays, so a later run can finish the withdrawal"


def test_reconcile_heals_deletions_and_rotations_and_otherwise_writes_nothing(
    seed: Registry, app: dict[str, Any], local_fleet: LocalFleet
) -> None:
    chart = {"chart": str(LOCAL_CHART), "repository": None, "version": None}
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
    rotated = base64.b64encode(b"rotated-password").decode()
    service.merge_patch(
        "v1", "Secret", "cluster-workload-cluster-app", "workload-cluster", {"data": {"password": rotated}}
    )
    assert reconcile(**chart, timeout_seconds=120)["credentials"] == ["workload-cluster"]
    assert (
        decoded(mgmt.get("v1", "Secret", "pg-credentials", "workload-cluster"))["password"]
        == "rotated-password"
    )

    before = versions(local_fleet)
    assert not any(reconcile(**chart, timeout_seconds=120).values()), "a healthy fleet needs no repair"
    assert versions(local_fleet) == before
