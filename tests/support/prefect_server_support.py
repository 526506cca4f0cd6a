"""A Prefect server a test can stop and start again on the same port and database.

The session's server (``prefect_test_harness``) lives in the test process and cannot be stopped
and restarted: a test about the server going away runs ``prefect server start`` as a process, as
``fleetflow up`` does (``supervisor/server.py`` gives its command line and environment), with its
own ``PREFECT_HOME`` and SQLite database, and the UI off.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fleetflow.supervisor import readiness, server
from fleetflow.supervisor.processes import free_port

START_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0


class PrefectServer:
    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.api_url = f"http://127.0.0.1:{free_port()}/api"
        self.database = home / "prefect.db"
        self.log = home / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = dict(
            server.env({k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}, self.api_url),
            PREFECT_HOME=str(home),
            PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{self.database}",
            PREFECT_SERVER_UI_ENABLED="false",
        )

    def start(self) -> float:
        """Start on the same port and database as before; the seconds until it answered /health."""
        assert self.proc is None, "the Prefect server is already running"
        started = time.monotonic()
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                server.argv(self.api_url), env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        proc = self.proc
        readiness.wait_until(
            f"the Prefect server at {self.api_url}",
            lambda: server.healthy(self.api_url),
            lambda: proc.poll() is None,
            self.log,
            timeout=START_TIMEOUT,
        )
        return time.monotonic() - started

    def stop(self) -> float:
        """SIGTERM and wait for the exit; the seconds it took. A server that ignores SIGTERM is
        killed and the test fails: an operator's ``kill`` must stop it."""
        proc, self.proc = self.proc, None
        assert proc is not None, "the Prefect server is not running"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
            raise AssertionError(
                f"awaited the Prefect server's exit within {STOP_TIMEOUT}s of SIGTERM; killed it.\n"
                f"{self.tail()}"
            ) from None
        return time.monotonic() - started

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "--- prefect server:\n" + "\n".join(text[-lines:])


@contextmanager
def prefect_server(home: Path) -> Iterator[PrefectServer]:
    """A started server, stopped at the end whatever happened (killed if it will not stop)."""
    found = PrefectServer(home)
    try:
        found.start()
        yield found
    finally:
        if found.proc is not None:
            proc = found.proc
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
