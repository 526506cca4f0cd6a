"""supervisor.processes: a pid is ours only while it runs with our marker; zombies count as exited."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from fleetflow.supervisor import processes
from tests.support.eventually import eventually


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A child that sleeps with ``marker`` (its directory) on its command line."""
    marker = str(tmp_path / "cluster-dir")
    argv = [sys.executable, "-c", "import time; time.sleep(60)", marker]
    pid = processes.start(argv, tmp_path / "sleeper.log")
    eventually(lambda: processes.is_ours(pid, marker), "the child to exec with the marker", 10)
    yield pid, marker
    processes.stop(pid, marker, timeout=5)


def test_a_running_child_with_the_marker_is_ours_until_stopped(sleeper: tuple[int, str]) -> None:
    pid, marker = sleeper
    assert processes.child_running(pid)
    processes.stop(pid, marker, timeout=5)
    assert not processes.is_ours(pid, marker)
    assert not processes.child_running(pid)  # stop reaped it
    assert not psutil.pid_exists(pid)


def test_a_pid_running_something_else_is_not_ours_and_never_signalled(sleeper: tuple[int, str]) -> None:
    pid, _ = sleeper
    assert not processes.is_ours(pid, "/some/other/cluster-dir")
    processes.stop(pid, "/some/other/cluster-dir", timeout=1)
    assert processes.child_running(pid)
    assert not processes.is_ours(os.getpid(), "/some/other/cluster-dir")


def test_no_pid_or_a_gone_pid_is_not_ours() -> None:
    assert not processes.is_ours(None, "x")
    assert not processes.is_ours(0, "x")
    assert not processes.is_ours(2**22 + 12345, "x")  # above the kernel's PID_MAX_LIMIT: never a pid


def test_a_zombie_is_not_running_and_gets_reaped(tmp_path: Path) -> None:
    marker = str(tmp_path)
    pid = processes.start([sys.executable, "-c", "pass", marker], tmp_path / "quick.log")
    eventually(lambda: psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, "the child to be a zombie", 10)
    assert not processes.is_ours(pid, marker)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # is_ours reaped it
