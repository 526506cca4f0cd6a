"""The platform's parts: the order they stop in, and readiness lines read only from the current start."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetflow.supervisor import parts
from fleetflow.supervisor.state import PlatformState, load, save


def test_down_stops_later_parts_first_and_the_database_last(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``fleetflow down`` stops, in what order: each part after those that use it."""
    pids = {part: 1000 + i for i, part in enumerate(("prefect-server", "executor", "watch", "api"))}
    save(
        PlatformState(
            own_server=True, prefect_db="postgres", pids=dict(pids), markers=dict.fromkeys(pids, "m")
        )
    )
    stopped: list[str] = []
    monkeypatch.setattr(parts.processes, "stop", lambda pid, marker: stopped.append(f"pid {pid}"))
    monkeypatch.setattr(
        parts.prefect_db, "stop", lambda choice, progress: stopped.append(f"{choice} database")
    )

    parts.down(lambda _message: None)

    assert stopped == ["pid 1003", "pid 1002", "pid 1001", "pid 1000", "postgres database"]
    assert load().pids == {}, "a stopped part is no longer recorded as running"


def test_a_readiness_line_from_an_earlier_start_does_not_count(tmp_path: Path) -> None:
    log = tmp_path / "executor.log"
    log.write_text("executor ready: 'platform', 7 deployments\nstopping\n")
    since = log.stat().st_size
    assert parts._log_says(log, parts.EXECUTOR_READY, 0)
    assert not parts._log_says(log, parts.EXECUTOR_READY, since)
    with log.open("a") as out:
        out.write("applying deployments\nexecutor ready: 'platform', 7 deployments\n")
    assert parts._log_says(log, parts.EXECUTOR_READY, since)
    assert not parts._log_says(tmp_path / "missing.log", parts.EXECUTOR_READY, 0)
