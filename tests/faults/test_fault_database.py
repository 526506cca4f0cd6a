"""Database faults on the running platform: a rotated password, and a PostgreSQL server killed.

Both on the event-driven platform (``fleetflow executor``, ``watch`` and ``api`` as processes, the
CloudNativePG stand-in in a thread), with a label-path database (a workload cluster labelled
``postgres=required`` and ``type=app``: pg-credentials in the management and the workload
cluster) and a Database request (its Secret next to it), both on the stand-in's server.

- Rotation: the password in the label path's ``-app`` Secret changes, as CloudNativePG's user
  rotates it; the request watcher's watch emits ``fleetflow.credentials.rotated`` and the
  fetch-credentials automation delivers it: pg-credentials in the workload cluster holds the
  new password within seconds, the new password opens the database and the old one does not.
- Killed server: SIGKILL of the postmaster. As with CloudNativePG (its instance restarted by the
  kubelet), the Cluster shows not ready meanwhile, and so do ``fleetflow show databases`` and
  the request (Ready=False, reason Unavailable); no delivered credentials are withdrawn or
  changed; once the server is back, both are ready again and the same passwords connect.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
from fleetflow_dev.cnpg import contract, instances

from fleetflow.databases import crd
from fleetflow.databases.inventory import serving_name
from fleetflow.databases.names import APP_NAMESPACE
from fleetflow.databases.spec import RequestRef, cnpg_name
from fleetflow.errors import FleetflowError
from fleetflow.kube import KubeClient, WaitTimeoutError
from fleetflow.labels import LabelEdit
from tests.support.eventually import eventually
from tests.support.local_fleet import LocalFleet
from tests.support.platform_support import FLEETFLOW, Platform, running_platform
from tests.support.requests_support import CNPG, ask, psql

pytestmark = [pytest.mark.integration, pytest.mark.fault]

TOKEN = "fault-db-token-" + "x" * 20
SERVICES, APP = "fdb-services", "fdb-app"
CLUSTER = f"cluster-{APP}"  # the label path's CNPG Cluster, in namespace APP on the service cluster
OUTAGE = 30.0  # seconds the stand-in's "kubelet" keeps the killed server down (its restart back-off)


@dataclass
class Fleet:
    platform: Platform
    mgmt: KubeClient
    service: KubeClient
    workload: KubeClient
    request: RequestRef


def decoded(obj: dict[str, Any] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in ((obj or {}).get("data") or {}).items()}


def label_path_login(fleet: Fleet) -> dict[str, str]:
    """The workload cluster's delivered credentials and address, as psql arguments."""
    return workload_login(fleet.workload)


def workload_login(workload: KubeClient) -> dict[str, str]:
    creds = decoded(workload.get("v1", "Secret", "pg-credentials", APP_NAMESPACE))
    address = workload.get("v1", "ConfigMap", "pg-loadbalancer-data", APP_NAMESPACE)["data"]
    return {
        "host": address["external-ip"],
        "port": address["port"],
        "username": creds["user"],
        "dbname": address["dbname"],
        "password": creds["password"],
    }


def delivered(service: KubeClient, workload: KubeClient) -> bool:
    """Whether the workload cluster holds the password of the label path's database, and its
    address opens it (an earlier module's pg-credentials may still be there)."""
    source = service.get_or_none("v1", "Secret", f"{CLUSTER}-app", APP)
    try:
        login = workload_login(workload)
    except (FleetflowError, KeyError):
        return False  # not (all) delivered yet
    return (
        bool(source)
        and login["password"] == decoded(source).get("password")
        and not psql(login, "select 1").returncode
    )


def ready_request(obj: dict[str, Any] | None) -> bool:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def watch(
    fleet: Fleet,
    client: KubeClient,
    what: tuple[str, str, str, str],
    predicate: Callable[[dict[str, Any] | None], bool],
    timeout: float,
    awaiting: str,
) -> dict[str, Any] | None:
    """Watch one object (api version, kind, name, namespace) until ``predicate``; a timeout
    names what was awaited and shows the platform's logs."""
    try:
        return client.wait(*what, predicate, timeout=timeout, awaiting=awaiting)
    except WaitTimeoutError as exc:
        raise AssertionError(f"{exc}\n{fleet.platform.tails()}") from None


@pytest.fixture(scope="module")
def fleet(
    local_fleet: LocalFleet,
    prefect_api: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Fleet]:
    with running_platform(local_fleet, prefect_api, tmp_path_factory, TOKEN) as platform:
        mgmt, service = local_fleet.client("mgmt"), local_fleet.client("service-cluster")
        workload = local_fleet.client("workload-cluster")
        namespace = f"t-fault-db-{uuid.uuid4().hex[:6]}"
        ref = RequestRef(APP, namespace, "orders")
        try:
            platform.enroll(SERVICES, "service-cluster", {"type": "services"})
            platform.enroll(APP, "workload-cluster", {"type": "app"})
            # The workload cluster may be registered already under another name (the session's
            # fleet is shared): its requests are then served under that first name, once.
            ref = RequestRef(serving_name(platform.registry, APP), namespace, "orders")
            # The service cluster's operator (install-operator's automation) and the Database
            # CRD (the request watcher installs it) come first; then both paths ask.
            service.wait(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "clusters.postgresql.cnpg.io",
                None,
                lambda o: o is not None,
                timeout=180,
                awaiting="CloudNativePG's CRD on the service cluster (install-operator)",
            )
            workload.wait(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                crd.CRD_NAME,
                None,
                lambda o: o is not None,
                timeout=120,
                awaiting="the Database CRD on the workload cluster (installed by the request watcher)",
            )
            started = time.monotonic()
            platform.registry.edit_labels(APP, LabelEdit.parse(["postgres=required"]))
            ask(local_fleet, ref.namespace, ref, "workload-cluster")
            # pg-credentials of this module's database: an earlier module's may still be there.
            eventually(
                lambda: delivered(service, workload),
                f"pg-credentials of {CLUSTER} in the workload cluster (provision-database, then deploy-app)",
                timeout=180,
                detail=platform.tails,
            )
            workload.wait(
                crd.API_VERSION,
                crd.KIND,
                ref.name,
                ref.namespace,
                ready_request,
                timeout=180,
                awaiting=f"Database {ref.namespace}/{ref.name} to be Ready",
            )
            print(f"label path and Database request ready: {time.monotonic() - started:.1f} s")
            yield Fleet(platform, mgmt, service, workload, ref)
        finally:
            with contextlib.suppress(FleetflowError):  # the request goes without fleetflow's finalizer
                patch = {"metadata": {"finalizers": None}}
                workload.merge_patch(crd.API_VERSION, crd.KIND, ref.name, ref.namespace, patch)
            workload.delete("v1", "Namespace", ref.namespace)
            service.delete(CNPG, "Cluster", CLUSTER, APP)
            service.delete(CNPG, "Cluster", cnpg_name(ref), ref.cluster)
            for name in (APP, SERVICES):
                platform.registry.deregister(name, delete_namespace=True)
            workload.delete("v1", "Namespace", APP_NAMESPACE)


def test_a_rotated_password_reaches_the_workload_cluster_within_seconds(fleet: Fleet) -> None:
    old = label_path_login(fleet)
    new_password = "rotated-" + os.urandom(12).hex()
    encoded = base64.b64encode(new_password.encode()).decode()
    started = time.monotonic()
    fleet.service.merge_patch("v1", "Secret", f"{CLUSTER}-app", APP, {"data": {"password": encoded}})
    watch(
        fleet,
        fleet.workload,
        ("v1", "Secret", "pg-credentials", APP_NAMESPACE),
        lambda o: decoded(o).get("password") == new_password,
        90,
        "the rotated password in pg-credentials of the workload cluster",
    )
    took = time.monotonic() - started
    print(f"label path: -app Secret rotated -> workload cluster's pg-credentials: {took:.1f} s")
    assert took < 60, "the rotation arrived, but not within seconds: was it the 5-minute reconcile?"
    mgmt_copy = decoded(fleet.mgmt.get("v1", "Secret", "pg-credentials", APP))
    assert mgmt_copy["password"] == new_password, "the management cluster's copy kept the old password"

    fresh = label_path_login(fleet)
    # The stand-in sets the role's password when it next reconciles the Cluster.
    eventually(lambda: psql(fresh, "select 1").returncode == 0, "the new password to open the database", 60)
    print(f"label path: -app Secret rotated -> new password connects: {time.monotonic() - started:.1f} s")
    refused = psql(old, "select 1")
    assert refused.returncode != 0, "the old password still works after the rotation"
    assert "password authentication failed" in refused.stderr, refused.stderr


def _postmaster(port: str) -> psutil.Process:
    """The PostgreSQL server listening on ``port`` (the stand-in's server of the service cluster)."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == int(port) and conn.pid:
            process = psutil.Process(conn.pid)
            assert process.name() == "postgres", process
            return process
    raise AssertionError(f"no process listens on port {port}")


def _show_databases(platform: Platform) -> str:
    listing = subprocess.run(
        [FLEETFLOW, "show", "databases"], env=platform.env, capture_output=True, text=True, timeout=120
    )
    row = next((line for line in listing.stdout.splitlines() if line.startswith(APP + " ")), "")
    assert row, listing.stdout + listing.stderr
    return row


def test_a_killed_server_shows_not_ready_keeps_the_credentials_and_recovers(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(instances, "RESTART_BACKOFF", OUTAGE)
    ref, secret_name = fleet.request, f"{fleet.request.name}-credentials"
    login = label_path_login(fleet)
    delivered = {
        "workload": fleet.workload.get("v1", "Secret", "pg-credentials", APP_NAMESPACE),
        "mgmt": fleet.mgmt.get("v1", "Secret", "pg-credentials", APP),
        "request": fleet.workload.get("v1", "Secret", secret_name, ref.namespace),
    }
    request_login = decoded(delivered["request"])
    assert psql(login, "select 1").returncode == 0
    assert psql(request_login, "select 1").returncode == 0
    assert "Cluster in healthy state" in _show_databases(fleet.platform)

    server = _postmaster(login["port"])
    killed = time.monotonic()
    server.send_signal(signal.SIGKILL)

    def down(obj: dict[str, Any] | None) -> bool:
        st = (obj or {}).get("status") or {}
        return st.get("readyInstances") == 0 and st.get("phase") != contract.PHASE_HEALTHY

    watch(fleet, fleet.service, (CNPG, "Cluster", CLUSTER, APP), down, 60, "the Cluster to be not ready")
    print(f"killed server -> CNPG Cluster not ready: {time.monotonic() - killed:.1f} s")
    assert psql(login, "select 1").returncode != 0, "the killed server still answers"
    row = _show_databases(fleet.platform)
    assert contract.PHASE_WAITING in row, f"fleetflow show databases during the outage: {row}"
    unavailable = watch(
        fleet,
        fleet.workload,
        (crd.API_VERSION, crd.KIND, ref.name, ref.namespace),
        lambda o: not ready_request(o) and ((o or {}).get("status") or {}).get("phase") == "Unavailable",
        OUTAGE,
        f"Database {ref} to show Ready=False while its server is down",
    )
    print(f"killed server -> Database request Ready=False/Unavailable: {time.monotonic() - killed:.1f} s")
    [condition] = (unavailable or {})["status"]["conditions"]
    assert condition["reason"] == "Unavailable", condition
    assert "not ready" in condition["message"], condition

    watch(
        fleet,
        fleet.service,
        (CNPG, "Cluster", CLUSTER, APP),
        contract.is_ready,
        120,
        "the Cluster ready again",
    )
    print(f"killed server -> CNPG Cluster ready again: {time.monotonic() - killed:.1f} s")
    # The same delivered passwords connect again.
    eventually(
        lambda: psql(login, "select 1").returncode == 0 and psql(request_login, "select 1").returncode == 0,
        "the delivered passwords to connect again",
        30,
    )
    print(f"killed server -> delivered passwords connect again: {time.monotonic() - killed:.1f} s")
    watch(
        fleet,
        fleet.workload,
        (crd.API_VERSION, crd.KIND, ref.name, ref.namespace),
        ready_request,
        120,
        f"Database {ref} to be Ready again",
    )
    print(f"killed server -> Database request Ready again: {time.monotonic() - killed:.1f} s")
    assert "Cluster in healthy state" in _show_databases(fleet.platform)

    # Nothing delivered was withdrawn or rewritten meanwhile.
    now = {
        "workload": fleet.workload.get("v1", "Secret", "pg-credentials", APP_NAMESPACE),
        "mgmt": fleet.mgmt.get("v1", "Secret", "pg-credentials", APP),
        "request": fleet.workload.get("v1", "Secret", secret_name, ref.namespace),
    }
    for where, before in delivered.items():
        assert now[where]["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], where
