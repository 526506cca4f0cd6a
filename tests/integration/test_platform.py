"""The event-driven platform: labels alone drive the seed's chain through Prefect automations.

Nothing here calls a flow: the deployments are served by ``fleetflow serve`` and the label
watcher by ``fleetflow watch`` (both as a user starts them), the CloudNativePG stand-in runs
for the service cluster, and the test only sets labels and waits for what follows.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter

from fleetflow.dbaas import operator
from fleetflow.dbaas.names import APP_NAMESPACE
from fleetflow.fleet.cnpg import controller
from fleetflow.kube import KubeClient, Kubeconfig
from fleetflow.labels import LabelEdit
from fleetflow.registry import Registry
from tests.integration.conftest import LocalFleet

pytestmark = pytest.mark.integration

FLEETFLOW = str(Path(sys.executable).parent / "fleetflow")


class Platform:
    def __init__(self, registry: Registry, env: dict[str, str], logs: Path) -> None:
        self.registry, self.env, self.logs = registry, env, logs

    def tails(self) -> str:
        return "\n".join(
            f"--- {p.name}:\n" + "\n".join(p.read_text().splitlines()[-15:])
            for p in sorted(self.logs.glob("*.log"))
        )

    def enroll(self, name: str, context: str, labels: dict[str, str]) -> None:
        """Register without a flow: write the registry objects directly."""
        self.registry.ensure_namespace(name)
        self.registry.store_kubeconfig(name, Kubeconfig.from_file(Path(self.env["KUBECONFIG"]), context))
        self.registry.apply(name, context, labels)


def _wait(what: str, check: Any, timeout: float, platform: Platform) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)  # polling Prefect/registry state with a deadline
    raise AssertionError(f"awaited {what} within {timeout}s\n{platform.tails()}")


@pytest.fixture(scope="module")
def platform(
    local_fleet: LocalFleet, prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    logs = tmp_path_factory.mktemp("platform-logs")
    env = dict(
        os.environ,
        KUBECONFIG=str(local_fleet.kubeconfig),
        FLEETFLOW_MGMT_CONTEXT="mgmt",
        PREFECT_API_URL=prefect_api,
        FLEETFLOW_HOME=str(local_fleet.home),
    )
    registry = Registry(local_fleet.client("mgmt"))
    registry.install()
    procs = []
    handles = []
    for name, argv in (("serve", ["serve", "--local-chart", "--poll", "1"]), ("watch", ["watch"])):
        handle = (logs / f"{name}.log").open("w")
        handles.append(handle)
        procs.append(subprocess.Popen([FLEETFLOW, *argv], env=env, stdout=handle, stderr=subprocess.STDOUT))
    stop = threading.Event()
    standin_root = tmp_path_factory.mktemp("standin")
    standin = threading.Thread(
        target=controller.run, args=(local_fleet.kubeconfig, ["service-cluster"], stop, standin_root)
    )
    standin.start()
    p = Platform(registry, env, logs)
    try:
        _wait("the platform's 5 deployments", lambda: len(_deployments()) >= 5, 120, p)
        yield p
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        for handle in handles:
            handle.close()
        stop.set()
        standin.join(60)
        controller.destroy_servers(standin_root)


def _deployments() -> list[Any]:
    with get_client(sync_client=True) as client:
        return list(client.read_deployments())


def _runs(flow_name: str, cluster: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["fleetflow"])),
            flow_run_filter=FlowRunFilter(),
            limit=200,
        )
        flows = {f.id: f.name for f in client.read_flows()}
    return [r for r in runs if flows.get(r.flow_id) == flow_name and r.parameters.get("cluster") == cluster]


def _completed(flow_name: str, cluster: str) -> bool:
    return any(r.state and r.state.is_completed() for r in _runs(flow_name, cluster))


def _secret(client: KubeClient, name: str, namespace: str) -> dict[str, str] | None:
    obj = client.get_or_none("v1", "Secret", name, namespace)
    return {k: base64.b64decode(v).decode() for k, v in obj["data"].items()} if obj else None


@pytest.fixture
def cleanup(platform: Platform, local_fleet: LocalFleet) -> Iterator[list[str]]:
    """Clusters a test enrols; their databases and registrations are removed afterwards."""
    names: list[str] = []
    yield names
    service = local_fleet.client("service-cluster")
    for name in names:
        service.delete("postgresql.cnpg.io/v1", "Cluster", f"cluster-{name}", name)
        platform.registry.deregister(name, delete_namespace=True)


def test_labels_alone_drive_the_chain(
    platform: Platform, local_fleet: LocalFleet, cleanup: list[str]
) -> None:
    svc, app = "e2e-services", "e2e-app"
    cleanup += [svc, app]
    platform.enroll(svc, "service-cluster", {"type": "services"})
    platform.enroll(app, "workload-cluster", {})
    _wait(
        "install-operator to run for the new service cluster",
        lambda: _completed("install-operator", svc),
        180,
        platform,
    )
    assert f"{svc}.cnpg-system.cnpg" in {a.key for a in operator.addons(platform.registry.mgmt)}

    platform.registry.edit_labels(app, LabelEdit.parse(["postgres=required"]))
    mgmt = local_fleet.client("mgmt")
    creds = _wait(
        "pg-credentials delivered to the management cluster",
        lambda: _secret(mgmt, "pg-credentials", app),
        240,
        platform,
    )
    for flow_name in ("provision-database", "fetch-credentials"):
        _wait(f"a completed {flow_name} run for {app}", lambda f=flow_name: _completed(f, app), 60, platform)

    platform.registry.edit_labels(app, LabelEdit.parse(["type=app"]))
    address = mgmt.get("v1", "ConfigMap", "pg-loadbalancer-data", app)["data"]
    workload = local_fleet.client("workload-cluster")

    def job_for_this_database() -> bool:
        job = workload.get_or_none("batch/v1", "Job", "todo-table", APP_NAMESPACE)
        args = job["spec"]["template"]["spec"]["containers"][0]["args"] if job else []
        return f"--port={address['port']}" in args

    _wait(
        "the todo-table Job for this database on the workload cluster", job_for_this_database, 180, platform
    )
    _wait(f"a completed deploy-app run for {app}", lambda: _completed("deploy-app", app), 60, platform)
    delivered = _secret(workload, "pg-credentials", APP_NAMESPACE)
    assert delivered == creds
    env = {"PATH": os.environ["PATH"], "PGPASSWORD": creds["password"]}
    done = subprocess.run(
        [
            "/usr/bin/psql",
            f"--host={address['external-ip']}",
            f"--port={address['port']}",
            f"--username={creds['user']}",
            "--dbname=todo",
            "--no-password",
            "-c",
            "select 1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
