"""Shared setup of the Database request tests: registered clusters, the stand-in, helpers.

Each test module declares its own module-scoped fixtures over :func:`seeded_fleet`.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fleetflow_dev.cnpg import chart_dir, controller

from fleetflow.databases import crd
from fleetflow.databases.spec import DatabaseSpec, RequestRef, manifest
from fleetflow.errors import FleetflowError
from fleetflow.flows.install_operator import install_operator
from fleetflow.flows.register_cluster import register_cluster
from fleetflow.kube import KubeClient
from fleetflow.registry import Registry
from tests.support.local_fleet import TEST_LABEL, LocalFleet

CNPG = "postgresql.cnpg.io/v1"


@contextmanager
def seeded_fleet(
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
    install_operator(chart=str(chart_dir()), repository=None, version=None)
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
    """A namespace name for this test; its Database objects (finalizers dropped) and the
    namespace itself are removed from every cluster after the test, so no other test's
    reconcile or listing meets them."""
    name = f"t-{request_.node.name[:20].lower().replace('_', '-').strip('-')}-{suffix}"
    local_fleet: LocalFleet = request_.getfixturevalue("local_fleet")

    def clean() -> None:
        for context in local_fleet.names:
            client = local_fleet.client(context)
            with contextlib.suppress(FleetflowError):
                items, _ = client.list(crd.API_VERSION, crd.KIND, name)
                for obj in items:
                    client.merge_patch(
                        crd.API_VERSION,
                        crd.KIND,
                        obj["metadata"]["name"],
                        name,
                        {"metadata": {"finalizers": None}},
                    )
            with contextlib.suppress(FleetflowError):
                client.delete("v1", "Namespace", name)

    request_.addfinalizer(clean)
    return name
