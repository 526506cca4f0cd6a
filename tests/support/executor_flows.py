"""A flow for the executor's tests: it records each execution, and can hold until released.

Each execution appends ``<flow run id> <key> start`` and ``... end`` to the file named by
``FLEETFLOW_TEST_RECORD``, so a test counts executions per run. ``hold`` keeps the run
Running until a file ``release`` appears next to the record (the work a test controls).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect import flow
from prefect.context import get_run_context

HOLD_LIMIT = 120.0  # seconds a held run waits for its release before failing


def _note(line: str) -> None:
    with Path(os.environ["FLEETFLOW_TEST_RECORD"]).open("a") as out:
        out.write(line + "\n")


@flow(name="executor-test-record")
def record(key: str, hold: bool = False, work_seconds: float = 0.0) -> str:
    run_id = str(get_run_context().flow_run.id)  # type: ignore[union-attr]
    _note(f"{run_id} {key} start")
    release = Path(os.environ["FLEETFLOW_TEST_RECORD"]).with_name("release")
    deadline = time.monotonic() + HOLD_LIMIT
    while hold and not release.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no release file {release} within {HOLD_LIMIT:.0f}s")
        time.sleep(0.05)  # the held work itself, released by the test
    time.sleep(work_seconds)  # simulated work, so a burst overlaps
    _note(f"{run_id} {key} end")
    return key
