"""Start, recognise and stop the fleet's long-running processes.

Processes are started in their own session so they outlive the CLI that started them. A pid
from the state file is trusted only if the process's command line (read with psutil) still
names the cluster's own directory: after a reboot or a crash the pid may belong to somebody
else, and we never signal a process we did not start. A zombie counts as exited.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import threading
from pathlib import Path

import psutil

_allocated: set[int] = set()
_allocated_lock = threading.Lock()


def free_port() -> int:
    """A loopback port nobody listens on, never handed out twice by this process."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        with _allocated_lock:
            if port not in _allocated:
                _allocated.add(port)
                return port


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` in its own session, appending its output to ``log``; return its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        return os.posix_spawn(
            argv[0],
            argv,
            dict(os.environ) if env is None else env,
            setsid=True,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, devnull, 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, out, 2),
            ],
        )
    finally:
        os.close(out)
        os.close(devnull)


def child_running(pid: int) -> bool:
    """For a child we just started: still running? (Until it has exec'd, its command line is
    still ours, so :func:`is_ours` cannot tell yet.)"""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == 0


def is_ours(pid: int | None, marker: str) -> bool:
    """True if ``pid`` runs and its command line mentions ``marker`` (the cluster directory)."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            raise psutil.ZombieProcess(pid)
        cmdline = process.cmdline()
    except psutil.ZombieProcess:  # dead for our purposes; reaped if it is our child
        _reap(pid)
        return False
    except psutil.Error:  # gone, or not ours to inspect
        return False
    return marker in " ".join(cmdline)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _wait_exit(pid: int, timeout: float) -> bool:
    """Block until ``pid`` exits (a pidfd becomes readable), at most ``timeout`` seconds."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    _reap(pid)
    return bool(ready)


def stop(pid: int, marker: str, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; no-op unless the process is ours."""
    if not is_ours(pid, marker):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if _wait_exit(pid, timeout):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait_exit(pid, timeout)
