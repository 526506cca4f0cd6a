"""supervisor.pgsystem: a postmaster.pid is trusted only for a live postgres serving that data directory."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from fleetflow.supervisor import pgsystem
from tests.support.eventually import eventually


@pytest.fixture
def fake_postgres(tmp_path: Path) -> Path:
    """``sleep`` under the name ``postgres``: what psutil sees of a postmaster, minus the database."""
    binary = tmp_path / "bin" / "postgres"
    binary.parent.mkdir()
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    return binary


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    return data


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def _pidfile(data_dir: Path, pid: int) -> None:
    (data_dir / "postmaster.pid").write_text(f"{pid}\n{data_dir}\n0\n5432\n\n127.0.0.1\n0 0\nready   \n")


def test_a_live_postgres_in_the_data_directory_is_the_postmaster(
    fake_postgres: Path, data_dir: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    procs.append(subprocess.Popen([fake_postgres, "60"], cwd=data_dir))
    _pidfile(data_dir, procs[-1].pid)
    assert pgsystem.postmaster_pid(data_dir) == procs[-1].pid


def test_a_reused_pid_is_not_the_postmaster(
    fake_postgres: Path, data_dir: Path, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    procs.append(subprocess.Popen([fake_postgres, "60"], cwd=tmp_path))  # another server's directory
    _pidfile(data_dir, procs[-1].pid)
    assert pgsystem.postmaster_pid(data_dir) is None
    procs.append(subprocess.Popen(["sleep", "60"], cwd=data_dir))  # not postgres at all
    _pidfile(data_dir, procs[-1].pid)
    assert pgsystem.postmaster_pid(data_dir) is None


def test_a_dead_or_zombie_postmaster_is_not_running(fake_postgres: Path, data_dir: Path) -> None:
    zombie = subprocess.Popen([fake_postgres, "0"], cwd=data_dir)
    try:
        eventually(
            lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE, "the child to exit", 10
        )
        _pidfile(data_dir, zombie.pid)
        assert pgsystem.postmaster_pid(data_dir) is None
    finally:
        zombie.wait()
    assert pgsystem.postmaster_pid(data_dir) is None  # reaped: gone
    (data_dir / "postmaster.pid").write_text("not a pid\n")
    assert pgsystem.postmaster_pid(data_dir) is None
    (data_dir / "postmaster.pid").unlink()
    assert pgsystem.postmaster_pid(data_dir) is None


def test_start_failure_names_the_server_log_problem() -> None:
    log = "2026-01-01 LOG:  starting\n2026-01-01 UTC [1] FATAL:  could not open file x\nLOG: shut down\n"
    assert pgsystem.problem(log) == "FATAL: could not open file x"
    assert pgsystem.problem("LOG: one\nLOG:   two  words\n") == "LOG: two words"
