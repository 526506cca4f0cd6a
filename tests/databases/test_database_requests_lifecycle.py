"""Database requests over a cluster's life: deregistration, an unreachable service cluster,
a rotated password (see test_database_requests for provisioning, changes and deletion)."""

from __future__ import annotations

import base64
import contextlib
import copy
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from fleetflow.databases import crd
from fleetflow.databases.inventory import serving_name
from fleetflow.databases.spec import RequestRef, cnpg_name
from fleetflow.errors import FleetflowError
from fleetflow.flows.database_request import database_request
from fleetflow.flows.register_cluster import register_cluster
from fleetflow.kube import Kubeconfig
from fleetflow.registry import Registry
from tests.support.eventually import eventually
from tests.support.local_fleet import LocalFleet
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


def fleetflow(local_fleet: LocalFleet, *argv: str) -> subprocess.CompletedProcess[str]:
    """The fleetflow CLI on the session's fleet, as a user runs it."""
    env = dict(os.environ, KUBECONFIG=str(local_fleet.kubeconfig), FLEETFLOW_MGMT_CONTEXT="mgmt")
    command = os.path.join(os.path.dirname(sys.executable), "fleetflow")
    return subprocess.run([command, *argv], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_deregistering_a_cluster_applies_each_requests_policy_and_says_so(
    fleet: Registry, local_fleet: LocalFleet, request: pytest.FixtureRequest
) -> None:
    name = f"dereg-{os.getpid()}"
    # Registered through "localhost" (its certificate names it), so that fleetflow sees a cluster
    # of its own: through 127.0.0.1 it is the module's workload-cluster, registered first, which
    # would serve these requests (README, "One API server, two names").
    kubeconfig = Kubeconfig.from_file(local_fleet.kubeconfig, "workload-cluster")
    data = copy.deepcopy(kubeconfig.data)
    server = data["clusters"][0]["cluster"]["server"]
    data["clusters"][0]["cluster"]["server"] = server.replace("127.0.0.1", "localhost")
    fleet.ensure_namespace(name)
    fleet.store_kubeconfig(name, Kubeconfig(data, kubeconfig.context))
    fleet.apply(name, kubeconfig.context, {})
    namespace = ns(request, "d")
    gone, kept = RequestRef(name, namespace, "gone"), RequestRef(name, namespace, "kept")
    ask(local_fleet, namespace, gone, "workload-cluster", deletionPolicy="Delete")
    ask(local_fleet, namespace, kept, "workload-cluster")
    for ref in (gone, kept):
        database_request(request=str(ref), timeout_seconds=120)
    for argv in (["show", "databases"], ["db", "list"]):
        shown = fleetflow(local_fleet, *argv)
        rows = [line.split() for line in shown.stdout.splitlines()]
        for ref in (gone, kept):
            row = next((r for r in rows if r and r[0] == str(ref)), None)
            assert row is not None, f"{argv}: {ref} not listed:\n{shown.stdout}{shown.stderr}"
            assert row[1:3] == ["True", "Ready"], row
    got = fleetflow(local_fleet, "db", "get", str(kept))
    assert f"Secret:          {namespace}/kept-credentials" in got.stdout, got.stdout + got.stderr
    done = fleetflow(local_fleet, "cluster", "deregister", name)
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


def test_a_second_name_of_a_served_cluster_serves_nothing_and_releases_nothing(
    fleet: Registry, local_fleet: LocalFleet, request: pytest.FixtureRequest
) -> None:
    """The workload cluster registered again under another name: a run under that name changes
    nothing (a second CNPG Cluster would be made in its namespace), and deregistering it leaves
    the request served, with fleetflow's finalizer, under the first name."""
    first = serving_name(fleet, "workload-cluster")
    alias = f"alias-{os.getpid()}"
    namespace = ns(request, "alias")
    served, aliased = RequestRef(first, namespace, "orders"), RequestRef(alias, namespace, "orders")
    register_cluster(name=alias, context="workload-cluster", mgmt_context="mgmt")
    try:
        assert serving_name(fleet, alias) == first, "a later name took the served cluster over"
        ask(local_fleet, namespace, served, "workload-cluster")
        done = database_request(request=str(aliased), timeout_seconds=60)
        assert done["phase"] == "Alias", done
        assert f"served as {served}" in done["detail"], done
        service = local_fleet.client("service-cluster")
        assert service.get_or_none(CNPG, "Cluster", cnpg_name(aliased), alias) is None
        assert database_request(request=str(served), timeout_seconds=120)["phase"] == "Ready"
        gone = fleetflow(local_fleet, "cluster", "deregister", alias)
        assert gone.returncode == 0, gone.stderr
        assert gone.stdout.strip() == f"cluster/{alias} deregistered", gone.stdout
        left = local_fleet.client("workload-cluster").get(crd.API_VERSION, crd.KIND, "orders", namespace)
        assert crd.FINALIZER in left["metadata"]["finalizers"], "the served request was released"
        assert service.get_or_none(CNPG, "Cluster", cnpg_name(served), first) is not None
    finally:
        fleet.deregister(alias, delete_namespace=True)
        local_fleet.client("service-cluster").delete(CNPG, "Cluster", cnpg_name(served), first)


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

    from fleetflow.databases.watcher import ClusterWatch

    ref = RequestRef("workload-cluster", ns(request, "rot"), "rotated")
    ask(local_fleet, ref.namespace, ref)
    database_request(request=str(ref), timeout_seconds=120)
    client, service = local_fleet.client("workload-cluster"), local_fleet.client("service-cluster")
    old = secret(client, ref.namespace, "rotated-credentials")

    def run_flows(batch: list[Any]) -> None:
        for event in batch:
            if event.payload.get("request") == str(ref) and "rotated" in event.payload:
                database_request(request=str(ref), timeout_seconds=60)

    # The watch of the service cluster's CloudNativePG secrets alone (not following the whole
    # registry, which other modules may have filled with aliases of the same servers).
    watch = ClusterWatch(fleet, "service-cluster", run_flows, 5)
    watch.rotations.start()
    try:
        assert watch.rotations_synced.wait(60), "the rotation watch did not list the secrets"
        new_password = "rotated-" + os.urandom(8).hex()
        app_secret = f"{cnpg_name(ref)}-app"
        encoded = base64.b64encode(new_password.encode()).decode()
        started = time.monotonic()
        service.merge_patch("v1", "Secret", app_secret, ref.cluster, {"data": {"password": encoded}})
        eventually(
            lambda: secret(client, ref.namespace, "rotated-credentials")["password"] == new_password,
            "the rotated password to reach the request's Secret",
            30,
        )
        print(f"rotation -> request Secret: {time.monotonic() - started:.1f}s")
        fresh = secret(client, ref.namespace, "rotated-credentials")
        assert new_password in fresh["uri"]
        # The stand-in, like CloudNativePG, sets the role's password from the secret when it next
        # reconciles the Cluster (a spec change makes it; the next converge puts the spec back).
        service.merge_patch(CNPG, "Cluster", cnpg_name(ref), ref.cluster, {"spec": {"instances": 2}})
        eventually(
            lambda: psql(fresh, "select 1").returncode == 0, "the new password to open the database", 60
        )
        assert psql(old, "select 1").returncode != 0, "the old password still works after the rotation"
    finally:
        watch.stop.set()
