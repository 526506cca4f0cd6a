"""Fault: the process running flows is killed mid-run, and nobody restarts it.

Two executors (different names) serve one deployment on the session's Prefect server. The
first claims a run that holds, and is killed with SIGKILL: it can neither finish nor report the
run, which would stay Running forever and hold back every later run of its parameters. With a
short repair interval (``FLEETFLOW_REPAIR_INTERVAL=10``: heartbeats every 3.3 s, crashed after
10 s without one), the platform's automation marks the run Crashed saying why, and the surviving
executor runs it again to Completed, with nobody acting on the run.

The deployment is the executor tests' recording flow (``tests.support.executor_flows``),
tagged like the platform's deployments, since the automation covers runs of those.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.events.schemas.automations import Automation
from prefect.settings import PREFECT_API_URL, temporary_settings

from fleetflow.config import REPAIR_INTERVAL_ENV, RepairInterval
from fleetflow.deployments import automations, platform
from fleetflow.executor import repair
from fleetflow.executor.prefect_api import claim_message
from tests.support.eventually import eventually
from tests.support.executor_lab import Lab, open_lab

pytestmark = [pytest.mark.integration, pytest.mark.fault]
WINDOW = 10  # seconds: Prefect's smallest ``within`` for a proactive trigger
DEADLINE = 90.0  # kill -> Completed, generous on a shared 2-core machine


@pytest.fixture
def repair_lab(prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """A tagged deployment, the lost-heartbeats automation at a 10 s repair interval (put back as
    it was afterwards: the server is the session's), executors started with that interval."""
    monkeypatch.setenv(REPAIR_INTERVAL_ENV, str(WINDOW))
    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        before = _automations()
        platform.apply_lost_heartbeats(RepairInterval(WINDOW))
        try:
            with open_lab(prefect_api, tmp_path, tags=[automations.TAG]) as lab:
                yield lab
        finally:
            _restore(before)


def _automations() -> list[Automation]:
    with get_client(sync_client=True) as client:
        return client.read_automations_by_name(automations.LOST_HEARTBEATS_NAME)


def _restore(before: list[Automation]) -> None:
    """Put back the window another module's platform applied, or remove the automation."""
    if before:
        within = before[0].trigger.within.total_seconds()  # type: ignore[union-attr]
        platform.apply_lost_heartbeats(RepairInterval(within))
        return
    with get_client(sync_client=True) as client:
        for now in client.read_automations_by_name(automations.LOST_HEARTBEATS_NAME):
            client.delete_automation(now.id)


def test_a_run_of_a_killed_executor_is_crashed_and_completed_by_another(repair_lab: Lab) -> None:
    lab = repair_lab
    platform.apply_lost_heartbeats(RepairInterval(WINDOW))  # applied again: updated, not copied
    [automation] = _automations()
    assert automation.trigger.within.total_seconds() == WINDOW  # type: ignore[union-attr]
    first = lab.start("e1")
    (run,) = lab.create(1, key="held", hold=True)
    eventually(lambda: lab.starts()[str(run.id)] == 1, "the held run to record its start in e1")
    lab.start("e2")
    assert lab.runs([run.id])[0].state_type.value == "RUNNING"

    first.kill()  # SIGKILL: no drain, no rescheduling, no last word
    killed = time.monotonic()
    first.wait(timeout=30)
    lab.record.with_name("release").touch()  # the work could finish now; e1 cannot see it
    (alive,) = lab.create(1, key="alive", work_seconds=1.5 * WINDOW)  # longer than the window, on e2

    def finished_again() -> FlowRun | None:
        (now,) = lab.runs([run.id])
        redone = now.state and now.state.is_final() and now.state.type.value != "CRASHED"
        return now if redone else None

    try:
        eventually(lambda: _crashed(run.id), f"run {run.id} to be Crashed by the automation", DEADLINE)
        to_crashed = time.monotonic() - killed
        done = eventually(finished_again, f"run {run.id} to finish again, after the crash", DEADLINE)
        to_completed = time.monotonic() - killed
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstates: {lab.states(run.id)}\ne2 log:\n{_tail(lab, 'e2')}") from None
    print(f"repair interval: heartbeat every {WINDOW / 3:.1f} s, crashed after {WINDOW} s without one")
    print(f"executor killed -> run Crashed (lost heartbeats): {to_crashed:.1f} s")
    print(f"executor killed -> run Completed by the other executor: {to_completed:.1f} s")

    assert done.state is not None
    assert done.state.name == "Completed", lab.states(run.id)
    history = _history(run.id)
    crash = next(m for t, m in history if t == "CRASHED")
    assert crash.startswith(automations.LOST_HEARTBEATS), crash
    assert f"{WINDOW} s" in crash, crash
    claims = [m for t, m in history if t == "PENDING"]
    assert claims == [claim_message("e1"), claim_message("e2")], history
    assert lab.starts()[str(run.id)] == 2, "executed once in e1 (killed) and once in e2"
    assert dict(done.parameters) == {"key": "held", "hold": True}
    lab.wait_final([alive.id], timeout=DEADLINE)
    lived = [t for t, _ in _history(alive.id)]
    assert lived[-1] == "COMPLETED", lived
    assert "CRASHED" not in lived, f"a run of a live executor, longer than the window, was crashed: {lived}"
    assert "rescheduled" in _tail(lab, "e2")


def test_a_crash_that_no_executor_saw_is_redone_by_the_fallback_poll(repair_lab: Lab) -> None:
    """No executor is up when the run is crashed. An executor starting more than a minute later
    gets no replay of the Crashed event; its fallback poll's look at recent crashes redoes the
    run. The test runs that look itself (rather than wait out the replay), then starts e2."""
    lab = repair_lab
    first = lab.start("e1")
    (run,) = lab.create(1, key="unseen", hold=True)
    eventually(lambda: lab.starts()[str(run.id)] == 1, "the held run to record its start in e1")
    first.kill()  # typically before its first heartbeat of the run: its claim opened the window
    killed = time.monotonic()
    first.wait(timeout=30)
    lab.record.with_name("release").touch()
    eventually(lambda: _crashed(run.id), f"run {run.id} to be Crashed by the automation", DEADLINE)
    print(f"no executor up: executor killed -> run Crashed: {time.monotonic() - killed:.1f} s")
    assert lab.runs([run.id])[0].state_type.value == "CRASHED", "nobody else redoes it"

    async def poll_once() -> int:  # what every executor's fallback poll runs
        async with get_client() as client:
            return await repair.redo_missed(client, [lab.deployment_id], "poll", set())

    assert asyncio.run(poll_once()) == 1
    assert asyncio.run(poll_once()) == 0, "redone once, whoever polls next"
    lab.start("e2")
    (done,) = lab.wait_final([run.id], timeout=DEADLINE)
    assert done.state is not None
    assert done.state.name == "Completed", lab.states(run.id)
    assert lab.starts()[str(run.id)] == 2


def _crashed(run_id: uuid.UUID) -> bool:
    """Whether the run was ever crashed by the lost-heartbeats automation."""
    return any(t == "CRASHED" and m.startswith(automations.LOST_HEARTBEATS) for t, m in _history(run_id))


def _history(run_id: object) -> list[tuple[str, str]]:
    with get_client(sync_client=True) as client:
        states = sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)  # type: ignore[arg-type]
    return [(s.type.value, s.message or "") for s in states]


def _tail(lab: Lab, name: str) -> str:
    log = lab.home / f"{name}.log"
    return log.read_text()[-3000:] if log.exists() else "(no log)"
