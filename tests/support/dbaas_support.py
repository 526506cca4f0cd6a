"""What the DBaaS integration tests share: the seed's clusters registered with the CloudNativePG
stand-in running, and helpers to read what the chain delivered.

Each test module wraps :func:`seeded_fleet` in a module-scoped ``seed`` fixture of its own (as
``platform_support.running_platform`` is wrapped), so one module's stand-in is stopped before
the next module starts its own.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fleetflow_dev.cnpg import controller

from fleetflow.databases import crd
from fleetflow.databases.names import APP_NAMESPACE
from fleetflow.databases.spec import label_ref
from fleetflow.flows.deprovision_database import deprovision_database
from fleetflow.flows.register_cluster import register_cluster
from fleetflow.labels import LabelEdit
from fleetflow.registry import Registry
from tests.support.local_fleet import LocalFleet

FLEETFLOW = str(Path(sys.executable).parent / "fleetflow")
PSQL = "/usr/bin/psql"


@contextmanager
def seeded_fleet(local_fleet: LocalFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
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


def label_database(
    local_fleet: LocalFleet, cluster: str, context: str = "workload-cluster"
) -> dict[str, Any] | None:
    """The Database a cluster's ``postgres=required`` stands for, as ``kubectl get databases`` reads it."""
    ref = label_ref(cluster)
    return local_fleet.client(context).get_or_none(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)


def forget(registry: Registry, cluster: str) -> None:
    """Take ``cluster``'s label away, delete its database (policy Delete) and deregister it, so
    that no Database of it is left on the API server it shares with workload-cluster."""
    if registry.get(cluster) is not None:
        registry.edit_labels(cluster, LabelEdit.parse(["postgres-"]))
        deprovision_database(cluster=cluster, deletion_policy="Delete")
    registry.deregister(cluster, delete_namespace=True)
