"""Fault: the Prefect server is stopped and started again while the platform runs.

Label changes made while it is down must still produce their runs once it is back, each exactly
once, without anybody restarting the watcher or the executor. The server is a real
``prefect server start`` process on its own port and SQLite database (``prefect_server_support``),
the platform's processes run against it (``platform_support.running_platform``). While the server
is down, one cluster asks for a database through the webhook API (which must keep answering: it
needs no Prefect), one becomes an app cluster and one stops being one; the server then comes back
on the same port and database.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fleetflow_dev.cnpg.controller import StandInController
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from fleetflow import events
from fleetflow.databases.views import CnpgCluster
from fleetflow.events import EMIT_BACKOFF_MAX
from fleetflow.labels import LabelEdit
from tests.support.eventually import eventually
from tests.support.local_fleet import LocalFleet
from tests.support.platform_support import Platform, running_platform
from tests.support.prefect_events import read_events, wait_for_events
from tests.support.prefect_server_support import PrefectServer, prefect_server

pytestmark = [pytest.mark.integration, pytest.mark.fault]

TOKEN = "pr-token-" + "y" * 24
SERVICES, DB, APP, UNAPP, FLIGHT = "pr-services", "pr-db", "pr-app", "pr-unapp", "pr-flight"
CNPG = "postgresql.cnpg.io/v1"
ENGINE_LOST = "Unable to connect to"  # Prefect's events client in a run, when the server is gone
# Each change made while Prefect is down, and the one deployment its policy row runs.
HOLD_MAX = 300.0  # seconds the stand-in holds FLIGHT's Cluster back at most (a failed test releases it)
CHANGES = ((DB, "provision-database"), (APP, "deploy-app"), (UNAPP, "withdraw-app"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    with prefect_server(tmp_path_factory.mktemp("prefect")) as found:
        yield found


@pytest.fixture(scope="module")
def platform(
    server: PrefectServer, local_fleet: LocalFleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """The platform against ``server``, with a service cluster that has its operator."""
    with running_platform(local_fleet, server.api_url, tmp_path_factory, TOKEN) as found:
        (found.logs / "prefect-server.log").symlink_to(server.log)  # in the tails of failures
        try:
            found.enroll(SERVICES, "service-cluster", {"type": "services"})
            eventually(
                lambda: completed(server.api_url, "install-operator", SERVICES),
                "install-operator for the service cluster",
                timeout=180,
                detail=found.tails,
            )
            yield found
        finally:
            if server.proc is None:  # failed while it was down: the platform stops cleanly with it up
                server.start()
            found.registry.deregister(SERVICES, delete_namespace=True)


@pytest.fixture
def clusters(server: PrefectServer, platform: Platform, local_fleet: LocalFleet) -> Iterator[list[str]]:
    """Clusters a test enrols: their databases and registrations are removed afterwards."""
    names: list[str] = []
    yield names
    if server.proc is None:
        server.start()
    service = local_fleet.client("service-cluster")
    for name in names:
        service.delete(CNPG, "Cluster", f"cluster-{name}", name)
        platform.registry.deregister(name, delete_namespace=True)


def runs(api: str, flow_name: str, cluster: str) -> list[FlowRun]:
    """The platform deployment's runs of ``flow_name`` for ``cluster``."""
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        flow = client.read_flow_by_name(flow_name)
        found = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["fleetflow"])), limit=200
        )
    return [r for r in found if r.flow_id == flow.id and r.parameters.get("cluster") == cluster]


def completed(api: str, flow_name: str, cluster: str) -> bool:
    return any(r.state_name == "Completed" for r in runs(api, flow_name, cluster))


def cluster_events(api: str, event: str, cluster: str) -> list[dict[str, Any]]:
    """The stored ``event``s of ``cluster``, once there is one (the server stores them in batches)."""
    with temporary_settings(updates={PREFECT_API_URL: api}):
        wait_for_events(api, event, f"fleetflow.cluster.{cluster}", timeout=60)
        return read_events(api, event, f"fleetflow.cluster.{cluster}")


def api_call(platform: Platform, method: str, path: str, body: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 - loopback
        platform.api_url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        return response.status, json.loads(response.read())


def test_label_changes_while_prefect_is_down_run_once_it_is_back(
    server: PrefectServer, platform: Platform, clusters: list[str]
) -> None:
    api, logs = server.api_url, platform.tails
    clusters += [DB, APP, UNAPP]
    platform.enroll(DB, "workload-cluster", {})
    platform.enroll(APP, "workload-cluster", {"type": "web"})
    platform.enroll(UNAPP, "workload-cluster", {"type": "app"})
    eventually(
        lambda: completed(api, "deploy-app", UNAPP),
        "deploy-app for the registered app cluster",
        timeout=180,
        detail=platform.tails,
    )
    before = {cluster: {r.id for r in runs(api, flow, cluster)} for cluster, flow in CHANGES}
    first = runs(api, "deploy-app", UNAPP)[0]
    registered = cluster_events(api, events.CLUSTER_REGISTERED, UNAPP)
    baseline = (first.start_time - datetime.fromisoformat(registered[0]["received"])).total_seconds()
    print(f"before the outage: deploy-app for {UNAPP} started {baseline:.1f}s after its event")
    watch_log = platform.logs / "watch.log"
    workers = {part: proc.pid for part, proc in platform.procs.items()}

    print(f"prefect server stop (SIGTERM to exit): {server.stop():.1f}s")
    down_at = time.monotonic()
    status, answer = api_call(platform, "POST", "/v1/databases", {"cluster": DB})
    assert (status, answer["changed"]) == (202, True), answer
    platform.registry.edit_labels(APP, LabelEdit.parse(["type=app"]))
    platform.registry.edit_labels(UNAPP, LabelEdit.parse(["type-"]))

    # The watcher sees the changes and cannot send them: it says so, keeps them and tries
    # again; the outage lasts until it waits its longest between attempts.
    # Its pauses are jittered (cut by up to 20%), so the longest reads 4.0 to 5.0 s.
    def longest_pause() -> bool:
        pauses = [float(p) for p in re.findall(r"retrying in ([0-9.]+)s", watch_log.read_text())]
        assert all(p <= EMIT_BACKOFF_MAX for p in pauses), pauses
        return any(p >= 0.8 * EMIT_BACKOFF_MAX for p in pauses)

    eventually(
        longest_pause,
        f"the watcher to wait about {EMIT_BACKOFF_MAX}s between attempts to send the changes",
        90,
        detail=platform.tails,
    )
    assert api_call(platform, "GET", f"/v1/databases/{DB}")[0] == 200, "the API needs no Prefect"
    print(f"prefect server down for {time.monotonic() - down_at:.1f}s")

    restarted = datetime.now(UTC)
    print(f"prefect server start on the same port and database (to /health): {server.start():.1f}s")
    answered = datetime.now(UTC)
    for cluster, flow in CHANGES:
        run = eventually(
            lambda c=cluster, f=flow: next(
                (r for r in runs(api, f, c) if r.id not in before[c] and r.state_name == "Completed"),
                None,
            ),
            f"{flow} for {cluster} to complete after the restart",
            timeout=180,
            detail=platform.tails,
        )
        sent = cluster_events(api, events.CLUSTER_LABELED, cluster)
        assert len(sent) == 1, f"one labeled event for {cluster}, not {len(sent)}\n{logs()}"
        received = datetime.fromisoformat(sent[0]["received"])
        print(
            f"{cluster}: event received {(received - answered).total_seconds():.1f}s after the server "
            f"answered again; {flow} started {(run.start_time - received).total_seconds():.1f}s "
            f"after the event, completed {(run.end_time - restarted).total_seconds():.1f}s after "
            "the server was started again"
        )
        assert (received - answered).total_seconds() < EMIT_BACKOFF_MAX + 10, logs()
    for cluster, flow in CHANGES:  # once each: no second run, no second emit
        new = [(r.name, r.state_name) for r in runs(api, flow, cluster) if r.id not in before[cluster]]
        assert len(new) == 1, f"{flow} for {cluster}: {new} since the outage, not one\n{logs()}"
        said = f"emitted {events.CLUSTER_LABELED} for fleetflow.cluster.{cluster} "
        assert watch_log.read_text().count(said) == 1, f"{cluster} emitted once\n{logs()}"
    for part, pid in workers.items():
        proc = platform.procs[part]
        assert proc.pid == pid, f"{part} was restarted"
        assert proc.poll() is None, f"{part} exited\n{logs()}"


@pytest.fixture
def held() -> Iterator[threading.Event]:
    """The stand-in leaves FLIGHT's CNPG Cluster alone (no status: not ready) until set, so that
    its provision-database run is surely in flight when the server stops: on a warm stand-in the
    run otherwise finished within a second, before the server had stopped."""
    release = threading.Event()
    reconcile = StandInController.reconcile

    def held_back(
        self: StandInController, service_cluster: str, namespace: str, name: str, **kw: Any
    ) -> None:
        if namespace == FLIGHT:
            release.wait(HOLD_MAX)
        reconcile(self, service_cluster, namespace, name, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StandInController, "reconcile", held_back)
        try:
            yield release
        finally:
            release.set()


def test_a_provision_in_flight_when_prefect_stops_completes_once(
    server: PrefectServer,
    platform: Platform,
    local_fleet: LocalFleet,
    clusters: list[str],
    held: threading.Event,
) -> None:
    """The server stops while provision-database runs: the database is made once, its credentials
    arrive, and a provision-database run for it ends Completed, with nobody acting."""
    api, logs = server.api_url, platform.tails
    clusters.append(FLIGHT)
    platform.enroll(FLIGHT, "workload-cluster", {})
    platform.registry.edit_labels(FLIGHT, LabelEdit.parse(["postgres=required"]))
    eventually(
        lambda: any(r.state_name == "Running" for r in runs(api, "provision-database", FLIGHT)),
        f"provision-database for {FLIGHT} to be running",
        timeout=180,
        detail=platform.tails,
    )
    engine_log = platform.logs / "executor.log"
    lost_before = engine_log.read_text().count(ENGINE_LOST)
    print(f"in flight: prefect server stop (SIGTERM to exit): {server.stop():.1f}s")
    down_at = time.monotonic()
    held.set()  # the database may come up now, while the server is down
    service, mgmt = local_fleet.client("service-cluster"), local_fleet.client("mgmt")
    # The outage lasts until the run's engine said it cannot reach the server, with the database
    # ready (the run has its work done up to what needs Prefect).
    eventually(
        lambda: (
            engine_log.read_text().count(ENGINE_LOST) > lost_before
            and (live := service.get_or_none(CNPG, "Cluster", f"cluster-{FLIGHT}", FLIGHT)) is not None
            and CnpgCluster.of(live).healthy
        ),
        f"the run's engine to lose the server, and the database of {FLIGHT} to be ready",
        120,
        detail=platform.tails,
    )
    print(f"in flight: prefect server down for {time.monotonic() - down_at:.1f}s")
    restarted = datetime.now(UTC)
    print(f"in flight: prefect server start (to /health): {server.start():.1f}s")
    run = eventually(
        lambda: next(
            (r for r in runs(api, "provision-database", FLIGHT) if r.state_name == "Completed"), None
        ),
        f"a completed provision-database run for {FLIGHT}",
        300,
        detail=platform.tails,
    )
    states = [r.state_name for r in runs(api, "provision-database", FLIGHT)]
    print(
        f"in flight: provision-database completed {(run.end_time - restarted).total_seconds():.1f}s after "
        f"the server was started again; its runs ended {states}"
    )
    assert states == ["Completed"], f"one run, completed, not {states}\n{logs()}"
    items, _ = service.list(CNPG, "Cluster", label_selector=f"cluster={FLIGHT}-{FLIGHT}")
    assert [i["metadata"]["name"] for i in items] == [f"cluster-{FLIGHT}"], logs()
    assert mgmt.get_or_none("v1", "Secret", "pg-credentials", FLIGHT) is not None, logs()
