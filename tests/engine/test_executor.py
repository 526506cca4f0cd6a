"""The executor on a real Prefect server: exactly once, crash recovery, coalescing, draining.

Executors run as separate processes (``tests.integration.run_executor``) against the
session's Prefect server and a test flow that records every execution
(``tests.integration.executor_flows``). Each test has its own deployment, so no test sees
another's runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

import fleetflow.supervisor as platform
from fleetflow.supervisor import pgserver, prefect_db
from tests.integration.executor_flows import record

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.integration.run_executor"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)  # polling the server with a deadline
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Lab:
    api: str
    deployment: str
    deployment_id: uuid.UUID
    record: Path
    home: Path
    procs: dict[str, subprocess.Popen[bytes]]

    def start(self, name: str, concurrency: int = 4) -> subprocess.Popen[bytes]:
        log = self.home / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        env = dict(
            os.environ,
            PREFECT_API_URL=self.api,
            FLEETFLOW_HOME=str(self.home),
            FLEETFLOW_TEST_RECORD=str(self.record),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
        )
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.run_executor",
                    name,
                    self.deployment,
                    str(concurrency),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs[name] = proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"executor {name} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            return "executor ready" in log.read_text()[offset:]

        wait_for(f"executor {name} to print 'executor ready'", ready)
        return proc

    def create(self, count: int, **parameters: Any) -> list[FlowRun]:
        """``count`` runs at once; ``key`` gets the run's index unless given."""

        async def create_all() -> list[FlowRun]:
            gate = asyncio.Semaphore(4)  # a burst, without overloading the test server

            async def create(client: Any, i: int) -> FlowRun:
                async with gate:
                    return await client.create_flow_run_from_deployment(
                        self.deployment_id, parameters={"key": f"k{i}", **parameters}
                    )

            async with get_client() as client:
                return list(await asyncio.gather(*(create(client, i) for i in range(count))))

        return asyncio.run(create_all())

    def runs(self, ids: list[uuid.UUID]) -> list[FlowRun]:
        with get_client(sync_client=True) as client:
            return [client.read_flow_run(i) for i in ids]

    def states(self, run_id: uuid.UUID) -> list[str]:
        with get_client(sync_client=True) as client:
            return [s.name for s in sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)]

    def wait_final(self, ids: list[uuid.UUID], timeout: float = 90.0) -> list[FlowRun]:
        def final() -> list[FlowRun] | None:
            runs = self.runs(ids)
            return runs if all(r.state and r.state.is_final() for r in runs) else None

        return wait_for(f"{len(ids)} runs to finish", final, timeout)  # type: ignore[no-any-return]

    def starts(self) -> Counter[str]:
        lines = self.record.read_text().split() if self.record.exists() else []
        triples = [lines[i : i + 3] for i in range(0, len(lines), 3)]
        return Counter(run for run, _, what in triples if what == "start")


@contextlib.contextmanager
def open_lab(api: str, home: Path, tags: list[str] | None = None) -> Iterator[Lab]:
    """A deployment of the test flow on the server at ``api``; executors started are killed after."""
    with temporary_settings(updates={PREFECT_API_URL: api}):
        name = f"test-{uuid.uuid4().hex[:8]}"
        deployment_id = record.to_deployment(name, tags=tags).apply()
        lab = Lab(api, name, deployment_id, home / "record", home, {})
        try:
            yield lab
        finally:
            for proc in lab.procs.values():
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=30)


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
    wait_for("a few runs to execute", lambda: sum(lab.starts().values()) >= 5)
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
    wait_for("the held run to record its start", lambda: lab.starts()[str(run.id)] == 1)
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
    wait_for("the first run to be Running", lambda: lab.runs([first.id])[0].state_type.value == "RUNNING")
    burst = lab.create(5, key="same", hold=True)
    ids = [r.id for r in burst]
    wait_for(
        "four of five runs to be superseded",
        lambda: sum(r.state_type.value == "CANCELLED" for r in lab.runs(ids)) == 4,
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
