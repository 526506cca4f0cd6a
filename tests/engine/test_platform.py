"""The event-driven platform: labels alone drive the seed's chain through Prefect automations.

Nothing here calls a flow: the deployments are run by ``fleetflow executor`` and the label
watcher by ``fleetflow watch`` (both as a user starts them), the CloudNativePG stand-in runs
for the service cluster, and the test only sets labels and waits for what follows.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter

from fleetflow.databases import operator
from fleetflow.databases.names import APP_NAMESPACE
from fleetflow.deployments.automations import LOST_HEARTBEATS_NAME
from fleetflow.kube import KubeClient
from fleetflow.labels import LabelEdit
from tests.support.eventually import eventually
from tests.support.local_fleet import LocalFleet
from tests.support.platform_support import Platform, running_platform

pytestmark = pytest.mark.integration

FLEETFLOW = str(Path(sys.executable).parent / "fleetflow")
TOKEN = "test-token-" + "x" * 20


def webhook(platform: Platform, method: str, path: str, body: dict[str, str] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{platform.env['FLEETFLOW_TEST_API_PORT']}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 202
        return dict(json.loads(response.read()))


@pytest.fixture(scope="module")
def platform(
    local_fleet: LocalFleet, prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    with running_platform(local_fleet, prefect_api, tmp_path_factory, TOKEN) as p:
        yield p


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


def select_one(address: dict[str, str], creds: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``select 1`` in the delivered database with the delivered address and credentials."""
    return subprocess.run(
        [
            "/usr/bin/psql",
            f"--host={address['external-ip']}",
            f"--port={address['port']}",
            f"--username={creds['user']}",
            f"--dbname={address['dbname']}",
            "--no-password",
            "-c",
            "select 1",
        ],
        env={"PATH": os.environ["PATH"], "PGPASSWORD": creds["password"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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
    eventually(
        lambda: _completed("install-operator", svc),
        "install-operator to run for the new service cluster",
        180,
        detail=platform.tails,
    )
    assert f"{svc}.cnpg-system.cnpg" in {a.key for a in operator.addons(platform.registry.mgmt)}

    assert webhook(platform, "POST", "/v1/databases", {"cluster": app})["changed"] is True
    mgmt = local_fleet.client("mgmt")
    creds = eventually(
        lambda: _secret(mgmt, "pg-credentials", app),
        "pg-credentials delivered to the management cluster",
        240,
        detail=platform.tails,
    )
    # provision-database delivers the credentials itself (no separate fetch-credentials run).
    eventually(
        lambda: _completed("provision-database", app),
        f"a completed provision-database run for {app}",
        60,
        detail=platform.tails,
    )

    platform.registry.edit_labels(app, LabelEdit.parse(["type=app"]))
    address = mgmt.get("v1", "ConfigMap", "pg-loadbalancer-data", app)["data"]
    workload = local_fleet.client("workload-cluster")

    def job_for_this_database() -> bool:
        job = workload.get_or_none("batch/v1", "Job", "todo-table", APP_NAMESPACE)
        args = job["spec"]["template"]["spec"]["containers"][0]["args"] if job else []
        return f"--port={address['port']}" in args

    eventually(
        job_for_this_database,
        "the todo-table Job for this database on the workload cluster",
        180,
        detail=platform.tails,
    )
    eventually(
        lambda: _completed("deploy-app", app),
        f"a completed deploy-app run for {app}",
        60,
        detail=platform.tails,
    )
    delivered = _secret(workload, "pg-credentials", APP_NAMESPACE)
    assert delivered == creds
    done = select_one(address, creds)
    assert done.returncode == 0, done.stderr

    # Retain (the default): the label goes, the database and its data stay, marked orphaned.
    webhook(platform, "DELETE", f"/v1/databases/{app}")
    eventually(
        lambda: _completed("deprovision-database", app),
        f"a completed deprovision-database run for {app}",
        120,
        detail=platform.tails,
    )
    service = local_fleet.client("service-cluster")
    kept = service.get("postgresql.cnpg.io/v1", "Cluster", f"cluster-{app}", app)
    assert "fleetflow.io/orphaned" in kept["metadata"]["annotations"]
    still = select_one(address, creds)
    assert still.returncode == 0, "a retained database must keep serving its data"
    listing = subprocess.run(
        [FLEETFLOW, "show", "databases"],
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    row = next((line for line in listing.stdout.splitlines() if line.startswith(app)), "")
    assert "Orphaned, retained" in row, listing.stdout + listing.stderr

    # No longer an app cluster: the Job is withdrawn (its automation, from the policy table).
    platform.registry.edit_labels(app, LabelEdit.parse(["type-"]))
    eventually(
        lambda: workload.get_or_none("batch/v1", "Job", "todo-table", APP_NAMESPACE) is None,
        "the todo-table Job to be withdrawn after type=app was removed",
        120,
        detail=platform.tails,
    )


def test_fifty_requests_in_a_second_make_one_database(
    platform: Platform, local_fleet: LocalFleet, cleanup: list[str]
) -> None:
    name, services = "e2e-burst", "e2e-burst-services"
    cleanup += [name, services]
    platform.enroll(services, "service-cluster", {"type": "services"})
    platform.enroll(name, "workload-cluster", {})
    # The burst is about provisioning: let the service cluster get its operator first (alone, this
    # test would otherwise race install-operator for the CNPG CRD).
    eventually(
        lambda: _completed("install-operator", services),
        "install-operator for the burst's service cluster",
        180,
        detail=platform.tails,
    )
    started = time.monotonic()
    for i in range(50):
        platform.registry.edit_labels(name, LabelEdit.parse(["postgres=required", f"burst={i}"]))
    assert time.monotonic() - started < 5, "the 50 label changes took too long to count as a burst"

    def settled() -> bool:
        runs = _runs("provision-database", name)
        return len(runs) >= 50 and all(r.state and r.state.is_final() for r in runs)

    eventually(settled, "the burst's provision-database runs to finish", 600, detail=platform.tails)
    runs = _runs("provision-database", name)
    states = [r.state.name for r in runs if r.state]
    why = [r.state.message for r in runs if r.state and r.state.name not in ("Completed", "Superseded")]
    ended = f"provision-database runs ended {states}: {why}\n{platform.tails()}"
    # One run per event; those arriving while one was in flight and one waiting were superseded.
    assert set(states) <= {"Completed", "Superseded"}, ended
    service = local_fleet.client("service-cluster")
    items, _ = service.list("postgresql.cnpg.io/v1", "Cluster", label_selector=f"cluster={name}-{name}")
    assert [i["metadata"]["name"] for i in items] == [f"cluster-{name}"]


def _automations() -> dict[str, str]:
    """fleetflow's automations on the server, name -> id (a second copy would show as a count)."""
    with get_client(sync_client=True) as client:
        found = [a for a in client.read_automations() if a.name.startswith("fleetflow: ")]
    names = [a.name for a in found]
    assert len(names) == len(set(names)), f"an automation twice: {sorted(names)}"
    return {a.name: str(a.id) for a in found}


def test_applying_the_platform_again_keeps_its_automations_in_place(platform: Platform) -> None:
    """A second ``fleetflow deploy`` (as another executor's ``--deploy``, or a restart) leaves
    every automation as it is: Prefect's own apply deleted and re-created them, a window in
    which an event (a label change, a Database request) triggered nothing."""
    before = _automations()
    assert len(before) >= 9, before
    _deploy(platform.env)
    assert _automations() == before, "automations were deleted and created again (new ids)"
    # A changed automation (another repair interval) is updated in place, then changed back.
    _deploy({**platform.env, "FLEETFLOW_REPAIR_INTERVAL": "60"})
    assert _automations() == before, "a changed automation was not updated in place"
    with get_client(sync_client=True) as client:
        [crash] = client.read_automations_by_name(LOST_HEARTBEATS_NAME)
    assert crash.trigger.within.total_seconds() == 60, crash.trigger
    _deploy(platform.env)
    assert _automations() == before


def _deploy(env: dict[str, str]) -> None:
    done = subprocess.run(
        [FLEETFLOW, "deploy", "--local-chart"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "deployments and their automations applied" in done.stdout, done.stdout
