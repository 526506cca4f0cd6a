"""reconcile repairs each cluster on its own: an unreachable cluster and a database that never
becomes ready fail their own rows, and a cluster listed after them is still repaired.

Three clusters, in the registry's (alphabetical) order: ``rc-a-dead`` (type=app) whose
kubeconfig points at a port nobody listens on; ``rc-b-slow`` (postgres=required) whose database
never becomes ready (no CloudNativePG stand-in runs in this module); ``rc-c-app`` (type=app)
whose credentials are in the management cluster but whose Job is missing. The first two failing
must not keep ``rc-c-app`` from being repaired.
"""

from __future__ import annotations

import copy
import json
import socket
import time
from collections.abc import Iterator
from uuid import UUID

import pytest
from fleetflow_dev.cnpg import chart_dir
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    LogFilter,
    LogFilterFlowRunId,
)

from fleetflow.databases import delivery
from fleetflow.databases.names import APP_NAMESPACE, CNPG_API
from fleetflow.databases.secrets import Credentials
from fleetflow.databases.views import Endpoint
from fleetflow.flows.install_operator import install_operator
from fleetflow.flows.reconcile import ARTIFACT_KEY, reconcile
from fleetflow.flows.register_cluster import register_cluster
from fleetflow.kube import Kubeconfig
from fleetflow.registry import Registry
from tests.support.dbaas_support import forget
from tests.support.eventually import eventually
from tests.support.local_fleet import LocalFleet

pytestmark = pytest.mark.integration

DEAD, SLOW, APP = "rc-a-dead", "rc-b-slow", "rc-c-app"
DEADLINE = 12  # seconds per cluster: the stuck database fails at it


def unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch, local_fleet: LocalFleet, prefect_api: str) -> Iterator[Registry]:
    monkeypatch.setenv("KUBECONFIG", str(local_fleet.kubeconfig))
    monkeypatch.setenv("FLEETFLOW_MGMT_CONTEXT", "mgmt")
    registry = Registry(local_fleet.client("mgmt"))
    registry.install()
    register_cluster(
        name="service-cluster", context="service-cluster", labels={"type": "services"}, mgmt_context="mgmt"
    )
    install_operator(chart=str(chart_dir()), repository=None, version=None, cluster="service-cluster")

    def enroll(name: str, kubeconfig: Kubeconfig, labels: dict[str, str]) -> None:
        registry.ensure_namespace(name)
        registry.store_kubeconfig(name, kubeconfig)
        registry.apply(name, kubeconfig.context, labels)

    dead = Kubeconfig.from_file(local_fleet.kubeconfig, "workload-cluster")
    data = copy.deepcopy(dead.data)
    data["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{unused_port()}"
    enroll(DEAD, Kubeconfig(data, dead.context), {"type": "app"})
    enroll(SLOW, Kubeconfig.from_file(local_fleet.kubeconfig, "workload-cluster"), {"postgres": "required"})
    enroll(APP, Kubeconfig.from_file(local_fleet.kubeconfig, "mgmt"), {"type": "app"})
    creds = Credentials(user="app", dbname="app", source="test/none@0/0", password="not-secret")
    delivery.publish(registry.mgmt, APP, creds, Endpoint("127.0.0.1", 5432))
    try:
        yield registry
    finally:
        service, mgmt = local_fleet.client("service-cluster"), local_fleet.client("mgmt")
        forget(registry, SLOW)  # its label's Database, deleted with its CNPG Cluster
        service.delete(CNPG_API, "Cluster", f"cluster-{SLOW}", SLOW)
        service.delete("v1", "Namespace", SLOW)
        mgmt.delete("batch/v1", "Job", "todo-table", APP_NAMESPACE)
        delivery.withdraw(mgmt, APP_NAMESPACE)
        for name in (DEAD, APP):
            registry.deregister(name, delete_namespace=True)


def outcome_table(flow_run_id: UUID) -> dict[str, dict[str, str]]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[ARTIFACT_KEY]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )
    assert len(found) == 1, found
    data = found[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    return {row["cluster"]: row for row in rows}


def log_lines(flow_run_id: UUID) -> list[str]:
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


def test_unreachable_and_stuck_clusters_do_not_stop_the_repair_of_the_others(
    fleet: Registry, local_fleet: LocalFleet
) -> None:
    mgmt = local_fleet.client("mgmt")
    assert mgmt.get_or_none("batch/v1", "Job", "todo-table", APP_NAMESPACE) is None
    chart = {"chart": str(chart_dir()), "repository": None, "version": None}

    started = time.monotonic()
    state = reconcile(**chart, timeout_seconds=DEADLINE, return_state=True)
    took = time.monotonic() - started

    # The healthy cluster, listed after both failures, was repaired.
    job = mgmt.get_or_none("batch/v1", "Job", "todo-table", APP_NAMESPACE)
    assert job is not None, "rc-c-app's Job was not deployed"
    # The run shows Failed, naming the failed clusters and no other of ours.
    assert state.is_failed()
    message = state.message or ""
    assert DEAD in message, message
    assert SLOW in message, message
    assert APP not in message, message
    # Clusters ran side by side: not the stuck one's deadline plus the dead one's retries.
    assert took < 2 * DEADLINE + 30, f"reconcile took {took:.0f}s"

    run_id = state.state_details.flow_run_id
    assert run_id is not None
    rows = outcome_table(run_id)
    assert rows[APP]["outcome"] == "repaired", rows[APP]
    assert rows[APP]["repaired"] == "app"
    assert rows[DEAD]["outcome"] == "failed", rows[DEAD]
    assert rows[DEAD]["detail"].startswith("deploy-app: "), rows[DEAD]
    assert rows[SLOW]["outcome"] == "failed", rows[SLOW]
    assert rows[SLOW]["detail"].startswith("provision-database: "), rows[SLOW]
    assert "timed out after" in rows[SLOW]["detail"], rows[SLOW]
    lines = eventually(
        lambda: (
            (found := log_lines(run_id))
            and all(any(line.startswith(f"{name}: ") for line in found) for name in (DEAD, SLOW, APP))
            and found
        ),
        "one reconcile log line per cluster",
    )
    assert any(line.startswith(f"{APP}: repaired app") for line in lines), lines
    assert any(line.startswith(f"{DEAD}: FAILED") for line in lines), lines
    assert any(line.startswith(f"{SLOW}: FAILED") for line in lines), lines

    # Again: the repaired cluster is unchanged and nothing of it is rewritten.
    again = reconcile(**chart, timeout_seconds=DEADLINE, return_state=True)
    again_id = again.state_details.flow_run_id
    assert again_id is not None
    assert outcome_table(again_id)[APP]["outcome"] == "unchanged"
    after = mgmt.get("batch/v1", "Job", "todo-table", APP_NAMESPACE)
    assert after["metadata"]["resourceVersion"] == job["metadata"]["resourceVersion"]
