"""A deployment of the recording test flow (:mod:`tests.support.executor_flows`) and executors
run against it as separate processes (:mod:`tests.support.run_executor`), for the executor's
tests and its faults: start and kill executors, create runs, read what executed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.support.eventually import eventually
from tests.support.executor_flows import record

ROOT = Path(__file__).resolve().parents[2]  # the repository: ``python -m tests.support...`` runs from it
MODULE = "tests.support.run_executor"


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
                    MODULE,
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
                pytest.fail(f"executor {name} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            return "executor ready" in log.read_text()[offset:]

        eventually(ready, f"executor {name} to print 'executor ready'")
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

        return eventually(final, f"{len(ids)} runs to finish", timeout)

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
