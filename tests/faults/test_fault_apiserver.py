"""Kube-apiserver faults: an API server is SIGKILLed mid-work and started again (same port, same
etcd data), and what fleetflow promises still holds.

- provision-database, while the service cluster's API server is down for longer than ordinary
  task retries last, completes with exactly one CNPG Cluster and working credentials, whether
  the server dies while the run waits for the database (the wait rides out the restart) or
  just before it applies the Cluster (apply-database retries for about 30 s).
- ``fleetflow watch``, while the management cluster's API server restarts, emits every label
  change exactly once: before the kill, right before it, right after the restart and after.

The clusters are a fleet of this module's own (``fault_fleet_support``): the session's shared
fleet is never killed.
"""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fleetflow_dev import binaries
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from fleetflow import events
from fleetflow.backoff import Backoff, retry
from fleetflow.databases.names import CNPG_API
from fleetflow.databases.spec import cnpg_name, label_ref
from fleetflow.kube import Kubeconfig
from fleetflow.kube.hub import hub
from fleetflow.kube.informer import SYNCED, Event, Informer
from fleetflow.registry import API_VERSION, KIND, ClusterRecord
from tests.support.dbaas_support import FLEETFLOW, psql
from tests.support.eventually import eventually
from tests.support.fault_fleet_support import MGMT, SERVICE, WORKLOAD, FaultFleet, fault_fleet
from tests.support.prefect_events import read_events, wait_for_events
from tests.support.watch_support import WatchProcess, logged_at

pytestmark = [pytest.mark.integration, pytest.mark.fault]

# Longer than ordinary task retries last (1, 2 and 4 s, up to 50 % jitter): the run completes
# only if its wait rides out the restart, and apply-database retries for longer.
SERVICE_DOWN_FOR = 12.0
MGMT_DOWN_FOR = 5.0

T = TypeVar("T")


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory, assets: binaries.Binaries) -> Iterator[FaultFleet]:
    with fault_fleet(tmp_path_factory, assets) as fleet:
        yield fleet


def retried(what: str, action: Callable[[], T], timeout: float = 60.0) -> T:
    """The test's own writes right after a restart: transient failures are retried with the
    platform's backoff policy until ``timeout``; any other failure is raised at once."""
    return retry(what, action, Backoff(first=0.2, cap=1.0, deadline=timeout))


def flow_run_of(workload: str) -> tuple[Any, dict[str, Any]]:
    """The (only) provision-database run for ``workload``, and its task runs by name."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(), limit=200)
        flows = {f.id: f.name for f in client.read_flows()}
        mine = [
            r
            for r in runs
            if flows.get(r.flow_id) == "provision-database" and r.parameters.get("cluster") == workload
        ]
        assert len(mine) == 1, f"expected one provision-database run for {workload}, found {len(mine)}"
        run = mine[0]
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    return run, {t.name.rsplit("-", 1)[0]: t for t in tasks}


def decoded(obj: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}


Moment = Callable[[subprocess.Popen[bytes], Callable[[], str]], None]


def provision_across_outage(
    faults: FaultFleet, prefect_api: str, log: Path, workload: str, moment: Moment, label: str
) -> None:
    """Run provision-database for ``workload``; once ``moment`` returns, kill the service
    cluster's API server for SERVICE_DOWN_FOR seconds. The run must complete with exactly one
    CNPG Cluster for ``workload`` and credentials that work."""
    service, mgmt = faults.client(SERVICE), faults.client(MGMT)
    name = cnpg_name(label_ref(workload))

    def tail() -> str:
        text = log.read_text(errors="replace") if log.exists() else ""
        return text[-3000:] + f"\n--- {SERVICE} kube-apiserver:\n" + faults.api_log(SERVICE)

    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            # -v: the run's task logs, whose lines mark the moment of the fault
            [FLEETFLOW, "run", "provision-database", workload, "--timeout", "180", "-v"],
            env=faults.env(prefect_api),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        moment(proc, tail)
        assert proc.poll() is None, f"provision-database ended before the fault\n{tail()}"
        at = time.monotonic() - started
        outage, restart = faults.outage(SERVICE, SERVICE_DOWN_FOR)
        try:
            code = proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"awaited provision-database to finish within 240 s\n{tail()}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    total = time.monotonic() - started
    assert code == 0, f"provision-database failed after the restart\n{tail()}"
    assert f"ready on {SERVICE}" in log.read_text(errors="replace"), tail()

    run, tasks = flow_run_of(workload)
    assert run.state.is_completed(), f"flow run state {run.state.type}\n{tail()}"
    clusters, _ = service.list(CNPG_API, "Cluster", workload)
    assert [(c["metadata"]["namespace"], c["metadata"]["name"]) for c in clusters] == [(workload, name)]

    creds = decoded(mgmt.get("v1", "Secret", "pg-credentials", workload))
    address = mgmt.get("v1", "ConfigMap", "pg-loadbalancer-data", workload)["data"]
    proof = psql(
        address["external-ip"],
        address["port"],
        creds["user"],
        creds["password"],
        address["dbname"],
        "-tAc",
        "select 1",
    )
    assert proof.returncode == 0, proof.stderr
    assert proof.stdout.strip() == "1"

    converge = tasks.get("converge-database-request")
    attempts = converge.run_count if converge else 0
    print(f"service apiserver fault {label}: killed {at:.1f}s after the run started")
    print(
        f"service apiserver fault {label}: outage {outage:.1f}s "
        f"(down {SERVICE_DOWN_FOR:.0f}s, restart {restart:.1f}s); converge attempts {attempts}"
    )
    print(
        f"service apiserver fault {label}: provision-database total {total:.1f}s, "
        "Completed, 1 CNPG Cluster, psql ok"
    )


def test_provision_completes_with_one_cluster_when_the_service_api_server_dies_during_its_wait(
    faults: FaultFleet, prefect_api: str, tmp_path: Path
) -> None:
    name = cnpg_name(label_ref(WORKLOAD))

    def setting_up(proc: subprocess.Popen[bytes], tail: Callable[[], str]) -> None:
        """The stand-in has begun setting the database up: the run has applied the Cluster and
        is waiting (by watch) for it to be healthy."""
        seen = faults.client(SERVICE).wait(
            CNPG_API,
            "Cluster",
            name,
            WORKLOAD,
            lambda o: bool(((o or {}).get("status") or {}).get("phase")),
            timeout=120,
            awaiting=f"the stand-in to start setting up Cluster {WORKLOAD}/{name}",
        )
        phase = (seen or {})["status"]["phase"]
        assert phase == "Setting up primary", f"too late to inject the fault: phase {phase!r}\n{tail()}"

    provision_across_outage(faults, prefect_api, tmp_path / "p.log", WORKLOAD, setting_up, "in the wait")


def test_provision_completes_with_one_cluster_when_the_service_api_server_dies_before_the_apply(
    faults: FaultFleet, prefect_api: str, tmp_path: Path
) -> None:
    workload = "f-workload-2"
    enroll(faults, workload, {"postgres": "required"})
    log = tmp_path / "p.log"

    def placed(proc: subprocess.Popen[bytes], tail: Callable[[], str]) -> None:
        """request-label-database has finished (it writes the label's Database on the workload
        cluster): converge-database-request, the first task to call the service cluster
        (placement, then the apply), starts now."""

        def done() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"provision-database ended before the fault\n{tail()}")
            finished = r"Task run 'request-label-database-\w+' - Finished in state Completed"
            return bool(re.search(finished, log.read_text()))

        eventually(done, "request-label-database to complete", 120, detail=tail)

    try:
        provision_across_outage(faults, prefect_api, log, workload, placed, "before the apply")
    finally:
        faults.registry.deregister(workload)


def labeled(faults: FaultFleet, cluster: str, stage: str) -> ClusterRecord:
    """Set label ``stage`` (retrying a write the restarting server refuses); the new record."""
    return retried(f"label stage={stage}", lambda: faults.registry.set_labels(cluster, {"stage": stage}))


def event_id(record: ClusterRecord) -> str:
    """The id the watcher gives the label change that produced ``record``."""
    return str(events.event_id(record.uid, "labeled", record.resource_version))


def enroll(faults: FaultFleet, cluster: str, labels: dict[str, str] | None = None) -> None:
    """Register ``cluster`` as another name of the workload cluster's API server; by default
    with a label no automation reacts to."""
    faults.registry.ensure_namespace(cluster)
    faults.registry.store_kubeconfig(cluster, Kubeconfig.from_file(faults.kubeconfig, WORKLOAD))
    faults.registry.apply(cluster, WORKLOAD, labels or {"stage": "registered"})


def test_watcher_emits_every_label_change_once_across_a_mgmt_api_server_restart(
    faults: FaultFleet, prefect_api: str
) -> None:
    # Two clusters: the change right before the kill (on X) may reach the watcher before the
    # kill or only at its relist after the restart; the change right after the restart (on Y)
    # cannot merge with it, so each change must give exactly one event whichever happened.
    x, y = "f-labels-x", "f-labels-y"
    for cluster in (x, y):
        enroll(faults, cluster)
    watch = WatchProcess(faults.env(prefect_api))
    changes: dict[str, dict[str, str]] = {x: {}, y: {}}  # cluster -> stage -> event id
    versions: dict[str, str] = {}  # stage of x -> resourceVersion

    def change(cluster: str, stage: str) -> str:
        record = labeled(faults, cluster, stage)
        changes[cluster][stage] = event_id(record)
        versions.setdefault(stage, record.resource_version)
        return f"(id {changes[cluster][stage]})"

    try:
        watch.wait_for_all([f"emitted {events.CLUSTER_REGISTERED} for fleetflow.cluster.{c}" for c in (x, y)])
        watch.wait_for("synced")
        watch.wait_for(change(x, "before"))

        killing = change(x, "before-kill")  # and the kill at once, not waiting for the watcher
        outage, restart = faults.outage(MGMT, MGMT_DOWN_FOR)
        back = time.time()
        after_restart = change(y, "after-restart")  # before the watcher notices the server is back
        lines = watch.wait_for_all(["synced", killing, after_restart], timeout=120)
        resynced = logged_at(lines["synced"]) - back
        emitted_after_restart = logged_at(lines[after_restart]) - back

        later = time.monotonic()
        watch.wait_for_all([change(x, "after"), change(y, "after")], timeout=60)
        emitted_after = time.monotonic() - later
        assert watch.proc.poll() is None, "fleetflow watch exited"
    finally:
        if watch.proc.poll() is None:
            watch.stop()
        for cluster in (x, y):
            faults.registry.deregister(cluster)
    log = "".join(watch.seen)
    assert "relisting" in log, f"the watcher never saw the outage:\n{log[-3000:]}"

    for cluster, made in changes.items():
        resource = f"fleetflow.cluster.{cluster}"
        # The last change's event is stored only after every earlier one the watcher sent.
        wait_for_events(
            prefect_api,
            events.CLUSTER_LABELED,
            resource,
            timeout=60,
            where=lambda e, last=made["after"]: e["id"] == last,
        )
        stored = read_events(prefect_api, events.CLUSTER_LABELED, resource)
        assert sorted(e["id"] for e in stored) == sorted(made.values()), (
            f"{cluster}: expected one event per label change {made}, "
            f"stored {[(e['id'], e['payload']) for e in stored]}"
        )
        by_id = {e["id"]: e for e in stored}
        for stage, eid in made.items():
            assert by_id[eid]["payload"]["labels"] == {"stage": stage}
        assert len(read_events(prefect_api, events.CLUSTER_REGISTERED, resource)) == 1
    # A watch resumed from before the restart is told to relist (410 at the request itself:
    # the new server's watch cache starts later), not failed for good.
    resumed = Informer(
        faults.client(MGMT), API_VERSION, KIND, resource_version=versions["before"], watch_timeout=2
    )
    first = hub().run(asyncio.wait_for(_first_event(resumed), 30))
    assert first.type == SYNCED, f"resumed from before the restart: relisting expected, got {first.type}"
    assert resumed.lists == 1, "resumed from before the restart: relisted once"
    ids = [eid for made in changes.values() for eid in made.values()]
    sent = [logged_at(line) for line in watch.seen if killing in line]
    if sent[0] >= back:
        fate = "first seen at the relist after the restart"
    elif len(sent) > 1:
        fate = "sent before the server was back, sent again at the relist (its state was not saved yet)"
    else:
        fate = "sent and saved before the kill took effect"
    reemitted = sum(log.count(f"(id {eid})") - 1 for eid in ids)

    print(f"mgmt apiserver fault: outage {outage:.1f}s (down {MGMT_DOWN_FOR:.0f}s, restart {restart:.1f}s)")
    print(f"mgmt apiserver fault: the change made right before the kill was {fate}")
    print(f"mgmt apiserver fault: restart to watcher relisted {resynced:.1f}s")
    print(
        f"mgmt apiserver fault: change right after restart to its event emitted {emitted_after_restart:.1f}s"
    )
    print(f"mgmt apiserver fault: changes after recovery to their events emitted {emitted_after:.2f}s")
    print(
        f"mgmt apiserver fault: {len(ids)} changes, {len(ids)} events stored, once each; "
        f"{reemitted} re-emitted (deduplicated by id)"
    )


async def _first_event(informer: Informer) -> Event:
    async for event in informer.events():
        return event
    raise AssertionError("an informer's events end only by raising")
