"""The platform's deployments run by a stock Prefect worker: ``fleetflow deploy --work-pool``.

A Prefect server of this module's own (``prefect server start``), ``fleetflow deploy
--work-pool NAME`` as a user runs it, and ``prefect worker start --pool NAME --run-once``
(Prefect's own process worker, nothing of fleetflow's) runs the chain against the local fleet: a
register-cluster run a user starts, then the install-operator run that the automation creates from
the registration event. Each must end Completed, run by that worker in a process of its own, with
its effect in Kubernetes: the cluster in the registry, the operator's helm release on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from fleetflow import events, watcher
from fleetflow.deployments import platform
from fleetflow.deployments.work_pool import HEARTBEAT_ENV
from fleetflow.registry import Registry
from tests.support.eventually import eventually
from tests.support.local_fleet import LocalFleet
from tests.support.prefect_server_support import PrefectServer, prefect_server

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
POOL = "fleetflow-test-pool"
WORKER_TIMEOUT = 300  # seconds for the worker's one poll and the run it starts (a process per run)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    with prefect_server(tmp_path_factory.mktemp("prefect-work-pool")) as found:
        yield found


@pytest.fixture
def env(server: PrefectServer, local_fleet: LocalFleet, tmp_path: Path) -> dict[str, str]:
    """As a user's shell: the fleet's kubeconfig and home, this module's Prefect server."""
    return dict(
        {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        PREFECT_API_URL=server.api_url,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        FLEETFLOW_HOME=str(local_fleet.home),
        KUBECONFIG=str(local_fleet.kubeconfig),
        FLEETFLOW_MGMT_CONTEXT="mgmt",
    )


@pytest.fixture
def api(server: PrefectServer) -> Iterator[SyncPrefectClient]:
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as found:
        yield found


def run_worker(env: dict[str, str], log: Path, what: str) -> str:
    """``prefect worker start --pool POOL --run-once``: one poll, then the runs it started; its log."""
    started = time.monotonic()
    with log.open("a") as out:
        worker = subprocess.run(
            [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--run-once", "--name", "test-worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=WORKER_TIMEOUT,
            check=False,
        )
    tail = "\n".join(log.read_text().splitlines()[-30:])
    assert worker.returncode == 0, tail
    print(f"prefect worker --run-once, {what}: {time.monotonic() - started:.1f} s from start to exit")
    return tail


def assert_run_by_the_worker(api: SyncPrefectClient, run_id: uuid.UUID, tail: str) -> None:
    done = api.read_flow_run(run_id)
    assert done.state_type == StateType.COMPLETED, f"{done.state}\n{tail}"
    assert done.work_pool_name == POOL
    assert done.infrastructure_pid, f"no process of the worker ran {done.name}"


def await_run(api: SyncPrefectClient, deployment_id: uuid.UUID, timeout: float = 60) -> FlowRun:
    """The flow run an automation created for this deployment."""
    flt = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    runs = eventually(
        lambda: api.read_flow_runs(deployment_filter=flt),
        f"the automation's flow run of deployment {deployment_id}",
        timeout,
    )
    return runs[0]


def test_a_stock_process_worker_runs_the_chain_from_registration_to_the_operator(
    api: SyncPrefectClient, env: dict[str, str], local_fleet: LocalFleet, tmp_path: Path
) -> None:
    deployed = subprocess.run(
        [str(BIN / "fleetflow"), "deploy", "--work-pool", POOL, "--local-chart"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert deployed.returncode == 0, deployed.stderr
    assert f"prefect worker start --pool {POOL}" in deployed.stdout

    pool = api.read_work_pool(POOL)
    assert pool.type == "process"
    deployments = {api.read_flow(d.flow_id).name: d for d in api.read_deployments()}
    assert sorted(deployments) == sorted(f.name for f in platform.FLOWS)
    assert {d.work_pool_name for d in deployments.values()} == {POOL}
    assert all(d.entrypoint and d.entrypoint.startswith("fleetflow.flows.") for d in deployments.values())
    assert {d.job_variables["env"][HEARTBEAT_ENV] for d in deployments.values()} == {"30"}

    registry = Registry(local_fleet.client("mgmt"))
    registry.install()
    name = f"wp-{uuid.uuid4().hex[:6]}"  # the service cluster, registered under a name of its own
    log = tmp_path / "worker.log"
    try:
        # 1. A user starts register-cluster; the worker runs it.
        registration = api.create_flow_run_from_deployment(
            deployments["register-cluster"].id,
            parameters={
                "name": name,
                "context": "service-cluster",
                "kubeconfig": str(local_fleet.kubeconfig),
                "labels": {"type": "services"},
                "mgmt_context": "mgmt",
            },
        )
        tail = run_worker(env, log, "register-cluster")
        assert_run_by_the_worker(api, registration.id, tail)
        record = registry.get(name)
        assert record is not None, f"cluster {name} is not in the registry\n{tail}"
        assert record.labels == {"type": "services"}
        assert record.ready is True

        # 2. The label watcher's event for it (as ``fleetflow watch`` builds it) meets the
        # automation, which creates an install-operator run in the pool; the worker runs it.
        with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
            events.emit_many(watcher.changes(name, None, watcher.Observed(record.uid, record.labels)))
        install = await_run(api, deployments["install-operator"].id)
        assert install.parameters["cluster"] == name
        tail = run_worker(env, log, "install-operator")
        assert_run_by_the_worker(api, install.id, tail)
        releases, _ = local_fleet.client("service-cluster").list(
            "v1", "Secret", "cnpg-system", "owner=helm,name=cnpg,status=deployed"
        )
        assert releases, f"no deployed helm release cnpg in cnpg-system of service-cluster\n{tail}"
    finally:
        registry.deregister(name, delete_namespace=True)
