"""The platform's parts: their order, and readiness lines read only from the current start."""

from __future__ import annotations

from pathlib import Path

from fleetflow.supervisor import parts


def test_parts_start_in_order_and_stop_in_reverse() -> None:
    assert parts.PARTS == ("prefect-db", "prefect-server", "executor", "watch", "api")


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
