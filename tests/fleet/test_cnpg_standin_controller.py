"""The local CloudNativePG stand-in's chart and controller: install, wait, serve, stop, keep going.

The chart installs with the real helm like CloudNativePG's and upgrades in place; ``run`` (what
``fleet up`` starts) waits for the chart, then serves until stopped; a slow Cluster holds up
neither the watch nor the others; a failing Cluster is reported and retried without stopping
the controller. The fleet, chart and controller are set up as
:mod:`tests.support.cnpg_standin_support` describes (this module's first test sees the
controller wait for a chart not installed yet); the databases a consumer gets are tested in
``test_cnpg_standin.py``.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleetflow_dev import binaries, cnpg
from fleetflow_dev.cnpg import contract

from fleetflow.supervisor import pgroles
from tests.support.cnpg_standin_support import (
    SERVICE_CLUSTER,
    WAIT,
    Credentials,
    StandIn,
    fresh_namespace,
    helm_environment,
    helm_install,
    install_chart,
    no_password_logged,
    plain_cluster,
    private_fleet,
    running_standin,
    wait_established,
)
from tests.support.eventually import eventually
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


def test_run_waits_for_the_chart_then_serves_until_stopped(
    fleet: LocalFleet,
    namespace: str,
    helm_env: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`run` (what `fleet up` starts) watches for the CRD, then serves; a stop ends it promptly."""
    caplog.set_level(logging.INFO, logger="fleetflow")
    client = fleet.client(SERVICE_CLUSTER)
    root = tmp_path / "cnpg"
    crd_api = "apiextensions.k8s.io/v1"
    chart_was_installed = client.get_or_none(crd_api, "CustomResourceDefinition", cnpg.CRD_NAME) is not None
    stop = threading.Event()
    thread = threading.Thread(target=cnpg.run, args=(fleet.kubeconfig, [SERVICE_CLUSTER], stop, root))
    thread.start()
    try:
        if not chart_was_installed:  # the module's first test: the controller starts before the chart
            eventually(
                lambda: any("waiting for its CRD" in r.getMessage() for r in caplog.records),
                "the controller to wait for the CRD",
                WAIT,
            )
        installed = helm_install(fleet, helm_env)
        assert installed.returncode == 0, installed.stderr
        wait_established(client)

        client.apply(plain_cluster("late", namespace))
        obj = client.wait(
            contract.API_VERSION,
            contract.KIND,
            "late",
            namespace,
            cnpg.is_ready,
            timeout=WAIT,
            awaiting="Cluster late (made after the chart was installed) to be healthy and Ready",
        )
        assert obj is not None
        (server,) = cnpg.servers(root)
        assert server.root == root / SERVICE_CLUSTER  # one server per service cluster
        late = contract.sql_name(namespace, "late")
        assert late in pgroles.database_comments(server)
        client.delete(contract.API_VERSION, contract.KIND, "late", namespace)
        client.wait(
            contract.API_VERSION,
            contract.KIND,
            "late",
            namespace,
            lambda o: o is None,
            timeout=WAIT,
            awaiting="Cluster late to be deleted through the stand-in's finalizer",
        )
        assert late not in pgroles.database_comments(server)
        server.close()
    finally:
        stop.set()
        thread.join(timeout=60)
        cnpg.destroy_servers(root)
    assert not thread.is_alive(), "run() did not return within a watch timeout of the stop"


def test_chart_installs_like_cloudnative_pg_and_reinstalls(
    fleet: LocalFleet, chart: None, helm_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    again = helm_install(fleet, helm_env)
    assert again.returncode == 0, again.stderr
    assert "has been upgraded" in again.stdout

    client = fleet.client(SERVICE_CLUSTER)
    crd = client.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", cnpg.CRD_NAME)
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
    assert "status" in version["subresources"]
    schema = version["schema"]["openAPIV3Schema"]["properties"]
    # CloudNativePG's real schema (v1.24.1), not a permissive stand-in for it.
    assert {"instances", "bootstrap", "storage", "managed"} <= set(schema["spec"]["properties"])
    assert schema["spec"]["properties"]["instances"]["minimum"] == 1
    assert "phase" in schema["status"]["properties"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Instances"] == ".status.instances"
    assert columns["Ready"] == ".status.readyInstances"
    assert columns["Status"] == ".status.phase"
    assert columns["Age"] == ".metadata.creationTimestamp"

    described = client.get("v1", "ConfigMap", "cnpg-standin", "cnpg-system")
    assert "NOT the CloudNativePG operator" in described["data"]["stand-in"]
    # The helper that `fleet up` can use runs the same command.
    for key in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        monkeypatch.setenv(key, helm_env[key])
    assert "has been upgraded" in cnpg.install_chart(fleet.kubeconfig, SERVICE_CLUSTER)


def test_a_slow_cluster_holds_up_neither_the_watch_nor_the_others(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reconciles run on a worker pool: a Cluster stuck in its reconcile leaves the others to run."""
    databases = standin.controller.databases[SERVICE_CLUSTER]
    ensure = databases.ensure
    release, entered = threading.Event(), threading.Event()

    def slow_ensure(spec: contract.ClusterSpec, password: str | None) -> tuple[str, int]:
        if spec.name == "slow":
            entered.set()
            assert release.wait(WAIT), "the test never released the slow Cluster"
        return ensure(spec, password)

    monkeypatch.setattr(databases, "ensure", slow_ensure)
    standin.apply(plain_cluster("slow", standin.namespace))
    assert entered.wait(WAIT), "the controller did not start reconciling Cluster slow"
    try:
        for name in ("quick-1", "quick-2", "quick-3"):
            standin.apply(plain_cluster(name, standin.namespace))
        for name in ("quick-1", "quick-2", "quick-3"):
            standin.wait_ready(name)
        slow = standin.client.get(contract.API_VERSION, contract.KIND, "slow", standin.namespace)
        assert not cnpg.is_ready(slow)
    finally:
        release.set()
    standin.wait_ready("slow")


def test_a_failing_cluster_is_reported_and_retried_without_stopping_the_controller(
    standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    standin.apply(plain_cluster("bad", standin.namespace, bootstrap={"recovery": {"source": "elsewhere"}}))
    invalid = standin.wait_phase("bad", cnpg.PHASE_INVALID)
    assert "initdb only" in invalid["status"]["phaseReason"]

    mine = {"initdb": {"database": "shop", "owner": "clerk", "secret": {"name": "clerk-credentials"}}}
    standin.apply(plain_cluster("mine", standin.namespace, bootstrap=mine))
    unable = standin.wait_phase("mine", cnpg.PHASE_UNABLE)
    assert "clerk-credentials" in unable["status"]["phaseReason"]

    password = "a-password-chosen-by-the-user"
    user_secret = {"username": "clerk", "password": password}
    standin.client.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "clerk-credentials", "namespace": standin.namespace},
            "type": "kubernetes.io/basic-auth",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in user_secret.items()},
        }
    )
    standin.wait_ready("mine")  # retried with backoff, by the same controller
    assert standin.client.get_or_none("v1", "Secret", "mine-app", standin.namespace) is None
    port = int(standin.service("mine-rw")["spec"]["ports"][0]["port"])  # type: ignore[index]
    # The user's secret gives the password; the role and database are still the Cluster's own.
    role = contract.sql_name(standin.namespace, "mine")
    creds = Credentials(role, password, role, "127.0.0.1", port)
    assert creds.sql("select current_user, current_database()") == f"{role}|{role}"
    assert standin.thread is not None
    assert standin.thread.is_alive()
    no_password_logged(caplog, password)
