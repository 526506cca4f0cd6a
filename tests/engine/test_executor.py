"""The executor on a real Prefect server: exactly once, crash recovery, coalescing, draining.

Executors run as separate processes (``tests.support.run_executor``) against the
session's Prefect server and a test flow that records every execution
(``tests.support.executor_flows``). Each test has its own deployment, so no test sees
another's runs.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

import fleetflow.supervisor as platform
from fleetflow.supervisor import pgserver, prefect_db
from tests.support.eventually import eventually
from tests.support.executor_lab import Lab, open_lab

pytestmark = pytest.mark.integration


@pytest.fixture
def lab(prefect_api: str, tmp_path: Path) -> Iterator[Lab]:
    """On the session's Prefect server (SQLite)."""
    with open_lab(prefect_api, tmp_path) as opened:
        yield opened


@pytest.fixture
def postgres_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """On a Prefect server of its own on PostgreSQL, as ``fleetflow up --prefect-db postgres`` runs it."""
    monkeypatch.setenv("FLEETFLOW_HOME", str(tmp_path / "platform-home"))
    try:
        api = platform.up_server(lambda _message: None, prefect_db_choice="postgres").api_url
        with open_lab(api, tmp_path) as opened:
            yield opened
    finally:
        platform.down(lambda _message: None)
        pgserver.destroy(prefect_db.data_root())


@pytest.mark.parametrize("server", ["sqlite", "postgresql"])
def test_each_run_executes_once_with_two_executors_and_one_stopped_mid_burst(
    server: str, request: pytest.FixtureRequest
) -> None:
    lab: Lab = request.getfixturevalue("lab" if server == "sqlite" else "postgres_lab")
    first = lab.start("e1")
    lab.start("e2")
    runs = lab.create(40, work_seconds=0.2)
    eventually(lambda: sum(lab.starts().values()) >= 5, "a few runs to execute")
    first.send_signal(signal.SIGTERM)  # stops claiming; finishes what it holds
    assert first.wait(timeout=60) == 0
    done = lab.wait_final([r.id for r in runs])
    assert [r.state.name for r in done if r.state] == ["Completed"] * 40
    starts = lab.starts()
    assert {str(r.id) for r in runs} == set(starts), "every run executed"
    assert max(starts.values()) == 1, f"runs executed more than once: {starts.most_common(3)}"
    assert "e1" in (lab.home / "e1.log").read_text()


def test_replayed_scheduled_events_do_not_run_a_run_again(lab: Lab) -> None:
    lab.start("e1")
    runs = lab.create(5)
    lab.wait_final([r.id for r in runs])
    now = datetime.now(UTC).isoformat()
    replay = [
        {
            "id": str(uuid.uuid4()),
            "occurred": now,
            "event": "prefect.flow-run.Scheduled",
            "resource": {"prefect.resource.id": f"prefect.flow-run.{r.id}"},
            "related": [
                {
                    "prefect.resource.id": f"prefect.deployment.{lab.deployment_id}",
                    "prefect.resource.role": "deployment",
                }
            ],
        }
        for r in runs
    ]
    with get_client(sync_client=True) as client:
        client.request("POST", "/events", json=replay)
    # A run created after the replay finishes after the executor handled the replay (one tick at a time).
    (sentinel,) = lab.create(1, key="after-replay")
    lab.wait_final([sentinel.id])
    assert [r.state.name for r in lab.runs([r.id for r in runs]) if r.state] == ["Completed"] * 5
    starts = lab.starts()
    assert [starts[str(r.id)] for r in runs] == [1] * 5, "a replayed event ran a completed run again"


def test_a_crashed_executors_runs_are_redone_when_it_restarts(lab: Lab) -> None:
    proc = lab.start("e1")
    (run,) = lab.create(1, key="held", hold=True)
    eventually(lambda: lab.starts()[str(run.id)] == 1, "the held run to record its start")
    assert lab.runs([run.id])[0].state_type.value == "RUNNING"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (lab.record.with_name("release")).touch()
    lab.start("e1")
    (done,) = lab.wait_final([run.id])
    assert done.state is not None
    assert done.state.name == "Completed"
    history = lab.states(run.id)
    assert "Crashed" in history, history
    assert history[-1] == "Completed"
    assert lab.starts()[str(run.id)] == 2, "executed once before the crash and once after"


def test_a_burst_for_one_key_coalesces_into_one_run_in_flight_and_one_waiting(lab: Lab) -> None:
    lab.start("e1")
    (first,) = lab.create(1, key="same", hold=True)
    eventually(lambda: lab.runs([first.id])[0].state_type.value == "RUNNING", "the first run to be Running")
    burst = lab.create(5, key="same", hold=True)
    ids = [r.id for r in burst]
    eventually(
        lambda: sum(r.state_type.value == "CANCELLED" for r in lab.runs(ids)) == 4,
        "four of five runs to be superseded",
    )
    lab.record.with_name("release").touch()
    done = {r.id: r for r in lab.wait_final([first.id, *ids])}
    assert done[first.id].state.name == "Completed"  # type: ignore[union-attr]
    completed = [done[i] for i in ids if done[i].state.name == "Completed"]  # type: ignore[union-attr]
    superseded = [done[i] for i in ids if done[i].state.name == "Superseded"]  # type: ignore[union-attr]
    assert len(completed) == 1, [done[i].state.name for i in ids]  # type: ignore[union-attr]
    assert len(superseded) == 4
    for run in superseded:
        assert f"superseded by {completed[0].name}" in (run.state.message or "")  # type: ignore[union-attr]
    assert sum(lab.starts().values()) == 2, "only the run in flight and the waiting one executed"
