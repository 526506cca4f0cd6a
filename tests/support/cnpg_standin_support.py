"""What the CloudNativePG stand-in's tests share: their fleet, the chart, a running controller.

The stand-in's tests run on a local fleet of their own (one cluster, "service-cluster", started
like the session's but without the background stand-in that ``fleet up`` starts): the controller
under test must be the only one serving that cluster, or two controllers would both act on every
Cluster. The chart is installed with the real helm binary, the controller runs in a thread, and
every database is reached the way a consumer would reach it: with the ``<cluster>-app`` Secret's
user and password and the LoadBalancer Service's ingress IP and port.

The pieces are context managers and helpers rather than fixtures so that each test module can
declare its fixtures with the scope it needs.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fleetflow_dev import binaries, cnpg
from fleetflow_dev.cnpg import contract
from fleetflow_dev.cnpg.controller import StandInController
from fleetflow_dev.manager import Fleet

from fleetflow.kube import KubeClient
from fleetflow.supervisor.pgroles import run_psql
from fleetflow.supervisor.pgsystem import find_bindir
from fleetflow.supervisor.postgres import Endpoint
from tests.support.local_fleet import LocalFleet, ensure_namespace

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


@contextlib.contextmanager
def private_fleet(home: Path, assets: binaries.Binaries) -> Iterator[LocalFleet]:
    """A fleet of one cluster, "service-cluster", with no other stand-in serving it."""
    private = Fleet(home)
    messages: list[str] = []
    # `fleet up` may start the stand-in as a background process; here the test runs it instead.
    options = {"standin": False} if "standin" in inspect.signature(Fleet.up).parameters else {}
    try:
        private.up([SERVICE_CLUSTER], assets, messages.append, **options)
        yield LocalFleet(home, private, (SERVICE_CLUSTER,))
    finally:
        private.down(messages.append)


@contextlib.contextmanager
def fresh_namespace(fleet: LocalFleet, test_name: str) -> Iterator[str]:
    """A new namespace in ``fleet``, as the session's ``namespace`` fixture makes them."""
    name = f"t-{test_name[:40].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:6]}"
    ensure_namespace(fleet.client(SERVICE_CLUSTER), name)
    try:
        yield name
    finally:
        fleet.client(SERVICE_CLUSTER).delete("v1", "Namespace", name)


def helm_environment(home: Path) -> dict[str, str]:
    """helm with its own cache and config under ``home``, not the developer's."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("HELM_")}
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
    )
    return env


def helm_install(fleet: LocalFleet, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    helm = binaries.ensure()["helm"]
    argv = [str(helm), "upgrade", "--install", "cnpg", str(cnpg.chart_dir()), "--namespace", "cnpg-system"]
    argv += ["--create-namespace", "--kubeconfig", str(fleet.kubeconfig), "--kube-context", SERVICE_CLUSTER]
    argv += ["--wait=false"]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180, check=False)


def install_chart(fleet: LocalFleet, env: dict[str, str]) -> None:
    """The stand-in chart, installed into service-cluster exactly as CloudNativePG's chart would be."""
    proc = helm_install(fleet, env)
    assert proc.returncode == 0, proc.stderr
    wait_established(fleet.client(SERVICE_CLUSTER))


def _established(crd: dict[str, Any] | None) -> bool:
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def wait_established(client: KubeClient) -> None:
    client.wait(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        cnpg.CRD_NAME,
        None,
        _established,
        timeout=60,
        awaiting=f"CRD {cnpg.CRD_NAME} installed by helm to be established",
    )


@contextlib.contextmanager
def running_standin(
    fleet: LocalFleet, namespace: str, root: Path, caplog: pytest.LogCaptureFixture
) -> Iterator[StandIn]:
    """A running controller for service-cluster with its own state ``root``, and ``namespace``.

    Afterwards every Cluster of the namespace is deleted through the controller (so its
    finalizer is honoured and its server destroyed), then the controller is stopped.
    """
    caplog.set_level(logging.DEBUG, logger="fleetflow")
    client = fleet.client(SERVICE_CLUSTER)
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


def no_password_logged(caplog: pytest.LogCaptureFixture, *passwords: str) -> None:
    for record in caplog.records:
        text = record.getMessage()
        for password in passwords:
            assert password not in text, f"a password appeared in the log line {record.name}: {text[:60]}..."
