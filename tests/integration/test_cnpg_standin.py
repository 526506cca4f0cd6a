"""The local CloudNativePG stand-in honours CNPG's contract on the local fleet.

The chart is installed with the real helm binary, the controller runs in a thread against
"service-cluster", and every database is reached the way a consumer would reach it: with the
``<cluster>-app`` Secret's user and password and the LoadBalancer Service's ingress IP and port.

These tests run on a local fleet of their own (one cluster, "service-cluster", started like the
session's but without the background stand-in that ``fleet up`` starts): the controller under
test must be the only one serving that cluster, or two controllers would both act on every
Cluster. It also lets the first test watch the controller wait for a chart not installed yet.
"""

from __future__ import annotations

import base64
import inspect
import logging
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from devfleet import binaries, cnpg
from devfleet.cnpg import contract
from devfleet.cnpg.controller import StandInController
from devfleet.manager import Fleet
from fleetflow.errors import FleetError
from fleetflow.kube import KubeClient
from supervisor.postgres import Endpoint, find_bindir, run_psql
from tests.integration.conftest import LocalFleet, ensure_namespace

pytestmark = pytest.mark.integration

SERVICE_CLUSTER = "service-cluster"
WAIT = 120.0  # seconds: a first initdb on a busy 2-core machine takes a few
SECRET_KEYS = {
    "username",
    "user",
    "password",
    "dbname",
    "host",
    "port",
    "pgpass",
    "uri",
    "jdbc-uri",
    "fqdn-uri",
    "fqdn-jdbc-uri",
}
# The seed's Job (job-to-create-table) runs exactly this against the todo database.
SEED_SQL = (
    "create table Todo (id bigint not null,completed boolean not null,ordering integer,"
    "title varchar(255),url varchar(255),primary key (id));"
    "create sequence hibernate_sequence start with 1 increment by 1;"
)


def seed_cluster(workload: str, namespace: str) -> dict[str, Any]:
    """The seed's Cluster template, instantiated for workload cluster ``workload``.

    In the seed the namespace is the workload cluster's own; here it is the test's, so the
    ``cluster`` label (``<namespace>-<name>`` in the seed) repeats the workload's name instead.
    """
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {
            "name": f"cluster-{workload}",
            "namespace": namespace,
            "labels": {"cluster": f"{workload}-{workload}"},
        },
        "spec": {
            "instances": 3,
            "bootstrap": {"initdb": {"database": "todo"}},
            "storage": {"size": "1Gi"},
            "managed": {
                "services": {
                    "disabledDefaultServices": ["ro", "r"],
                    "additional": [
                        {
                            "selectorType": "rw",
                            "serviceTemplate": {
                                "metadata": {"name": "cluster-rw-lb"},
                                "spec": {"type": "LoadBalancer"},
                            },
                        }
                    ],
                }
            },
        },
    }


def plain_cluster(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"instances": 1, **spec},
    }


@dataclass
class Credentials:
    user: str
    password: str
    dbname: str
    host: str
    port: int

    def sql(self, sql: str) -> str:
        """Run ``sql`` with psql as the secret's user; the password travels only in PGPASSWORD."""
        endpoint = Endpoint(self.host, self.port, None)
        return run_psql(
            find_bindir() / "psql", endpoint, sql, user=self.user, password=self.password, dbname=self.dbname
        )


@dataclass
class StandIn:
    client: KubeClient
    namespace: str
    root: Path
    controller: StandInController
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self.controller.run, args=(self.stop,), name="cnpg-standin-test"
        )
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=4 * self.controller.watch_timeout + 60)
            assert not self.thread.is_alive(), "the stand-in controller did not stop within its watch timeout"
            self.thread = None

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.apply(body)

    def wait_ready(self, name: str) -> dict[str, Any]:
        obj = self.client.wait(
            contract.API_VERSION,
            contract.KIND,
            name,
            self.namespace,
            cnpg.is_ready,
            timeout=WAIT,
            awaiting=f"Cluster {name} in phase {cnpg.PHASE_HEALTHY!r} with condition Ready=True",
        )
        assert obj is not None
        return obj

    def wait_phase(self, name: str, phase: str) -> dict[str, Any]:
        obj = self.client.wait(
            contract.API_VERSION,
            contract.KIND,
            name,
            self.namespace,
            lambda o: ((o or {}).get("status") or {}).get("phase") == phase,
            timeout=WAIT,
            awaiting=f"Cluster {name} in phase {phase!r}",
        )
        assert obj is not None
        return obj

    def wait_gone(self, kind: str, name: str, api_version: str = contract.API_VERSION) -> None:
        self.client.wait(
            api_version,
            kind,
            name,
            self.namespace,
            lambda o: o is None,
            timeout=WAIT,
            awaiting=f"{kind} {name} to be deleted",
        )

    def secret(self, name: str) -> dict[str, Any]:
        return self.client.get("v1", "Secret", name, self.namespace)

    def service(self, name: str) -> dict[str, Any] | None:
        return self.client.get_or_none("v1", "Service", name, self.namespace)

    def secret_credentials(self, cluster: str) -> Credentials:
        """The -app secret's user, password, database and port, on 127.0.0.1 (where -rw would lead)."""
        secret = self.secret(f"{cluster}-app")
        user, password, dbname, port = (
            contract.decode(secret, k) for k in ("username", "password", "dbname", "port")
        )
        assert user
        assert password
        assert dbname
        assert port
        return Credentials(user, password, dbname, "127.0.0.1", int(port))

    def credentials(self, cluster: str, service: str) -> Credentials:
        """What a consumer has: the -app secret's user and password, the LoadBalancer's IP and port."""
        secret = self.secret(f"{cluster}-app")
        lb = self.client.wait(
            "v1",
            "Service",
            service,
            self.namespace,
            lambda o: bool(((o or {}).get("status") or {}).get("loadBalancer", {}).get("ingress")),
            timeout=WAIT,
            awaiting=f"Service {service} to have a load balancer ingress",
        )
        assert lb is not None
        user, password, dbname = (contract.decode(secret, k) for k in ("username", "password", "dbname"))
        assert user
        assert password
        assert dbname
        ip = lb["status"]["loadBalancer"]["ingress"][0]["ip"]
        return Credentials(user, password, dbname, ip, int(lb["spec"]["ports"][0]["port"]))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, assets: binaries.Binaries) -> Iterator[LocalFleet]:
    """A fleet of one cluster, "service-cluster", for this module, with no other stand-in serving it."""
    home = tmp_path_factory.mktemp("cnpg-fleet")
    private = Fleet(home)
    messages: list[str] = []
    # `fleet up` may start the stand-in as a background process; here the test runs it instead.
    options = {"standin": False} if "standin" in inspect.signature(Fleet.up).parameters else {}
    try:
        private.up([SERVICE_CLUSTER], assets, messages.append, **options)
        yield LocalFleet(home, private, (SERVICE_CLUSTER,))
    finally:
        private.down(messages.append)


@pytest.fixture
def namespace(fleet: LocalFleet, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace in this module's fleet, as the session's ``namespace`` fixture makes them."""
    name = f"t-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:6]}"
    ensure_namespace(fleet.client(SERVICE_CLUSTER), name)
    yield name
    fleet.client(SERVICE_CLUSTER).delete("v1", "Namespace", name)


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm with its own cache and config, not the developer's."""
    home = tmp_path_factory.mktemp("helm")
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("HELM_")}
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
    )
    return env


def _helm_install(fleet: LocalFleet, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    helm = binaries.ensure()["helm"]
    argv = [str(helm), "upgrade", "--install", "cnpg", str(cnpg.CHART_DIR), "--namespace", "cnpg-system"]
    argv += ["--create-namespace", "--kubeconfig", str(fleet.kubeconfig), "--kube-context", SERVICE_CLUSTER]
    argv += ["--wait=false"]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180, check=False)


@pytest.fixture(scope="module")
def chart(fleet: LocalFleet, helm_env: dict[str, str]) -> None:
    """The stand-in chart, installed into service-cluster exactly as CloudNativePG's chart would be."""
    proc = _helm_install(fleet, helm_env)
    assert proc.returncode == 0, proc.stderr
    _wait_established(fleet.client(SERVICE_CLUSTER))


def _established(crd: dict[str, Any] | None) -> bool:
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def _wait_established(client: KubeClient) -> None:
    client.wait(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        cnpg.CRD_NAME,
        None,
        _established,
        timeout=60,
        awaiting=f"CRD {cnpg.CRD_NAME} installed by helm to be established",
    )


@pytest.fixture
def standin(
    fleet: LocalFleet, chart: None, namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> Iterator[StandIn]:
    """A running controller for service-cluster with its own state root, and this test's namespace.

    Afterwards every Cluster of the namespace is deleted through the controller (so its
    finalizer is honoured and its server destroyed), then the controller is stopped.
    """
    caplog.set_level(logging.DEBUG, logger="fleetflow")
    client = fleet.client(SERVICE_CLUSTER)
    root = tmp_path / "cnpg"
    controller = StandInController({SERVICE_CLUSTER: client}, root, watch_timeout=2)
    standin = StandIn(client, namespace, root, controller)
    standin.start()
    try:
        yield standin
    finally:
        try:
            if standin.thread is None:
                standin.start()
            items, _ = client.list(contract.API_VERSION, contract.KIND, namespace)
            for item in items:
                client.delete(contract.API_VERSION, contract.KIND, item["metadata"]["name"], namespace)
            for item in items:
                standin.wait_gone(contract.KIND, item["metadata"]["name"])
            standin.halt()
        finally:
            standin.stop.set()
            cnpg.destroy_servers(root)  # a safety net: no server outlives its test


def _no_password_logged(caplog: pytest.LogCaptureFixture, *passwords: str) -> None:
    for record in caplog.records:
        text = record.getMessage()
        for password in passwords:
            assert password not in text, f"a password appeared in the log line {record.name}: {text[:60]}..."


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
            deadline = time.monotonic() + WAIT
            while not any("waiting for the chart" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "timed out waiting for the controller to wait for the CRD"
                time.sleep(0.05)
        installed = _helm_install(fleet, helm_env)
        assert installed.returncode == 0, installed.stderr
        _wait_established(client)

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
        assert late in server.database_comments()
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
        assert late not in server.database_comments()
        server.close()
    finally:
        stop.set()
        thread.join(timeout=60)
        cnpg.destroy_servers(root)
    assert not thread.is_alive(), "run() did not return within a watch timeout of the stop"


def test_chart_installs_like_cloudnative_pg_and_reinstalls(
    fleet: LocalFleet, chart: None, helm_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    again = _helm_install(fleet, helm_env)
    assert again.returncode == 0, again.stderr
    assert "has been upgraded" in again.stdout

    client = fleet.client(SERVICE_CLUSTER)
    crd = client.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", cnpg.CRD_NAME)
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
    assert "status" in version["subresources"]
    schema = version["schema"]["openAPIV3Schema"]["properties"]
    assert schema["spec"]["x-kubernetes-preserve-unknown-fields"] is True
    assert schema["status"]["x-kubernetes-preserve-unknown-fields"] is True
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

    _no_password_logged(caplog, creds.password)


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
    assert before.dbname not in server.database_comments()
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
    _no_password_logged(caplog, password)
