"""Database requests on the local fleet: several per cluster, their Secrets, changes, deletion.

The database-request flow is called as the automation would call it (one run per request);
the watcher and automations that start it are tested with the platform. Credentials are proven
by connecting with psql to the stand-in's real PostgreSQL.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from devfleet.cnpg import CHART_DIR, controller
from fleetflow.databases import crd
from fleetflow.databases.spec import DatabaseSpec, RequestRef, cnpg_name, manifest
from fleetflow.errors import APIInvalidError, FleetflowError, PermanentError
from fleetflow.kube import KubeClient, Kubeconfig
from fleetflow.registry import Registry
from flows.database_request import database_request
from flows.install_operator import install_operator
from flows.register_cluster import register_cluster
from tests.integration.conftest import TEST_LABEL, LocalFleet

pytestmark = pytest.mark.integration
CNPG = "postgresql.cnpg.io/v1"


@pytest.fixture(scope="module")
def fleet(
    local_fleet: LocalFleet, prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """Registered clusters, the stand-in's chart and controller, the Database CRD everywhere."""
    patch = pytest.MonkeyPatch()
    patch.setenv("KUBECONFIG", str(local_fleet.kubeconfig))
    patch.setenv("FLEETFLOW_MGMT_CONTEXT", "mgmt")
    registry = Registry(local_fleet.client("mgmt"))
    registry.install()
    for name, labels in (
        ("mgmt", {"type": "mgmt"}),
        ("service-cluster", {"type": "services"}),
        ("workload-cluster", {}),
    ):
        register_cluster(name=name, context=name, labels=labels, mgmt_context="mgmt")
    install_operator(chart=str(CHART_DIR), repository=None, version=None)
    for name in ("mgmt", "workload-cluster"):
        crd.install(local_fleet.client(name))
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


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, local_fleet: LocalFleet) -> None:
    monkeypatch.setenv("KUBECONFIG", str(local_fleet.kubeconfig))
    monkeypatch.setenv("FLEETFLOW_MGMT_CONTEXT", "mgmt")


def ask(
    local_fleet: LocalFleet, namespace: str, ref: RequestRef, context: str = "", **spec: Any
) -> dict[str, Any]:
    """Apply a Database as GitOps would (in a namespace labelled for the tests); ``context``
    reaches the cluster when its registered name is not its context's."""
    client = local_fleet.client(context or ref.cluster)
    client.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": TEST_LABEL}}
    )
    return client.apply(manifest(ref, DatabaseSpec.from_spec(ref.name, spec)))


def secret(client: KubeClient, namespace: str, name: str) -> dict[str, str]:
    data = client.get("v1", "Secret", name, namespace).get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def psql(creds: dict[str, str], sql: str, dbname: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PGPASSWORD": creds["password"], "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(
        [
            "/usr/bin/psql",
            f"--host={creds['host']}",
            f"--port={creds['port']}",
            f"--username={creds['username']}",
            f"--dbname={dbname or creds['dbname']}",
            "--no-password",
            "--set=ON_ERROR_STOP=1",
            "--tuples-only",
            f"--command={sql}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ns(request_: pytest.FixtureRequest, suffix: str) -> str:
    return f"t-{request_.node.name[:20].lower().replace('_', '-').strip('-')}-{suffix}"


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
    from flows.reconcile import reconcile

    ref = RequestRef("workload-cluster", ns(request, "heal"), "healed")
    ask(local_fleet, ref.namespace, ref)
    database_request(request=str(ref), timeout_seconds=120)
    client = local_fleet.client("workload-cluster")
    before = client.get(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)["metadata"]["resourceVersion"]
    client.delete("v1", "Secret", "healed-credentials", ref.namespace)
    reconcile(chart=str(CHART_DIR), repository=None, version=None, timeout_seconds=120, return_state=True)
    restored = secret(client, ref.namespace, "healed-credentials")
    assert psql(restored, "select 1").returncode == 0
    after = client.get(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)["metadata"]["resourceVersion"]
    assert after == before, "reconcile rewrote the status of a request that was already Ready"


def test_deregistering_a_cluster_applies_each_requests_policy_and_says_so(
    fleet: Registry, local_fleet: LocalFleet, request: pytest.FixtureRequest
) -> None:
    name = f"dereg-{os.getpid()}"
    register_cluster(name=name, context="workload-cluster", mgmt_context="mgmt")
    namespace = ns(request, "d")
    gone, kept = RequestRef(name, namespace, "gone"), RequestRef(name, namespace, "kept")
    ask(local_fleet, namespace, gone, "workload-cluster", deletionPolicy="Delete")
    ask(local_fleet, namespace, kept, "workload-cluster")
    for ref in (gone, kept):
        database_request(request=str(ref), timeout_seconds=120)
    env = dict(os.environ, KUBECONFIG=str(local_fleet.kubeconfig), FLEETFLOW_MGMT_CONTEXT="mgmt")
    fleetflow = os.path.join(os.path.dirname(sys.executable), "fleetflow")
    for argv in (["show", "databases"], ["db", "list"]):
        shown = subprocess.run(
            [fleetflow, *argv], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        rows = [line.split() for line in shown.stdout.splitlines()]
        for ref in (gone, kept):
            row = next((r for r in rows if r and r[0] == str(ref)), None)
            assert row is not None, f"{argv}: {ref} not listed:\n{shown.stdout}{shown.stderr}"
            assert row[1:3] == ["True", "Ready"], row
    got = subprocess.run(
        [fleetflow, "db", "get", str(kept)], env=env, capture_output=True, text=True, check=False
    )
    assert f"Secret:          {namespace}/kept-credentials" in got.stdout, got.stdout + got.stderr
    done = subprocess.run(
        [fleetflow, "cluster", "deregister", name],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"{gone}: Delete: deleted CloudNativePG Cluster" in done.stdout
    assert f"{kept}: Retain: retained CloudNativePG Cluster" in done.stdout
    assert fleet.get(name) is None
    service = local_fleet.client("service-cluster")
    service.wait(
        CNPG,
        "Cluster",
        cnpg_name(gone),
        name,
        lambda o: o is None,
        timeout=60,
        awaiting="the Delete request's CNPG Cluster to be deleted",
    )
    retained = service.get(CNPG, "Cluster", cnpg_name(kept), name)
    assert "fleetflow.io/orphaned" in retained["metadata"]["annotations"]
    client = local_fleet.client("workload-cluster")
    assert psql(secret(client, namespace, "kept-credentials"), "select 1").returncode == 0, (
        "Retain keeps the data and the app's credentials"
    )
    left = client.get(crd.API_VERSION, crd.KIND, "kept", namespace)
    assert crd.FINALIZER not in (left["metadata"].get("finalizers") or []), (
        "fleetflow's finalizer stays behind"
    )


def test_an_unreachable_service_cluster_shows_as_unreachable_and_no_selector_match_says_so(
    fleet: Registry, local_fleet: LocalFleet, request: pytest.FixtureRequest
) -> None:
    from fleetflow.databases.converge import converge
    from fleetflow.errors import TemporaryError

    dead = f"dead-svc-{os.getpid()}"
    kubeconfig = Kubeconfig.from_file(local_fleet.kubeconfig, "service-cluster")
    data = copy.deepcopy(kubeconfig.data)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"  # nobody listens there
    fleet.ensure_namespace(dead)
    fleet.store_kubeconfig(dead, Kubeconfig(data, kubeconfig.context))
    fleet.apply(dead, kubeconfig.context, {"type": "services", "zone": "gone"})
    client = local_fleet.client("workload-cluster")
    try:
        namespace = ns(request, "u")
        unreachable = RequestRef("workload-cluster", namespace, "far")
        ask(local_fleet, namespace, unreachable, serviceClusterSelector={"zone": "gone"})
        with pytest.raises(TemporaryError):
            converge(fleet, unreachable, timeout=30)
        obj = client.get(crd.API_VERSION, crd.KIND, "far", namespace)
        cond = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        assert (cond["status"], cond["reason"]) == ("False", "Unreachable"), cond
        assert dead in cond["message"] or "127.0.0.1" in cond["message"]

        nowhere = RequestRef("workload-cluster", namespace, "nowhere")
        ask(local_fleet, namespace, nowhere, serviceClusterSelector={"zone": "mars"})
        assert converge(fleet, nowhere, timeout=30).phase == "Failed"
        obj = client.get(crd.API_VERSION, crd.KIND, "nowhere", namespace)
        cond = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        assert (cond["reason"], "zone=mars" in cond["message"]) == ("NoServiceCluster", True), cond
    finally:
        for name in ("far", "nowhere"):
            with contextlib.suppress(FleetflowError):
                client.merge_patch(
                    crd.API_VERSION, crd.KIND, name, namespace, {"metadata": {"finalizers": None}}
                )
        fleet.deregister(dead, delete_namespace=True)


def test_a_rotated_password_reaches_the_requests_secret_within_seconds(
    fleet: Registry, local_fleet: LocalFleet, request: pytest.FixtureRequest
) -> None:
    """The watcher sees the ``-app`` Secret change on the service cluster and the request is
    converged again at once (here its event runs the flow directly, as the automation would)."""
    import time

    from fleetflow.databases.watcher import RequestWatcher

    ref = RequestRef("workload-cluster", ns(request, "rot"), "rotated")
    ask(local_fleet, ref.namespace, ref)
    database_request(request=str(ref), timeout_seconds=120)
    client, service = local_fleet.client("workload-cluster"), local_fleet.client("service-cluster")
    old = secret(client, ref.namespace, "rotated-credentials")

    def run_flows(batch: list[Any]) -> None:
        for event in batch:
            if event.payload.get("request") == str(ref) and "rotated" in event.payload:
                database_request(request=str(ref), timeout_seconds=60)

    stop = threading.Event()
    watcher = RequestWatcher(fleet, emit=run_flows, watch_timeout=5)
    ready = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop, ready), daemon=True)
    thread.start()
    try:
        assert ready.wait(90), "the request watcher did not sync"
        new_password = "rotated-" + os.urandom(8).hex()
        app_secret = f"{cnpg_name(ref)}-app"
        encoded = base64.b64encode(new_password.encode()).decode()
        started = time.monotonic()
        service.merge_patch("v1", "Secret", app_secret, ref.cluster, {"data": {"password": encoded}})
        deadline = time.monotonic() + 30
        while secret(client, ref.namespace, "rotated-credentials")["password"] != new_password:
            assert time.monotonic() < deadline, (
                "the rotated password did not reach the request's Secret in 30 s"
            )
            time.sleep(0.2)  # polling the Secret with a deadline
        print(f"rotation -> request Secret: {time.monotonic() - started:.1f}s")
        fresh = secret(client, ref.namespace, "rotated-credentials")
        assert new_password in fresh["uri"]
        # The stand-in, like CloudNativePG, sets the role's password from the secret when it next
        # reconciles the Cluster (a spec change makes it; the next converge puts the spec back).
        service.merge_patch(CNPG, "Cluster", cnpg_name(ref), ref.cluster, {"spec": {"instances": 2}})
        deadline = time.monotonic() + 60
        while (works := psql(fresh, "select 1")).returncode != 0:
            assert time.monotonic() < deadline, f"the new password never opened the database: {works.stderr}"
            time.sleep(0.5)  # polling the database with a deadline
        assert psql(old, "select 1").returncode != 0, "the old password still works after the rotation"
    finally:
        stop.set()
        thread.join(30)
