"""The platform's parts, started in order, each awaited by its own readiness check (polled with a deadline):

- prefect-db      only with ``--prefect-db postgres``: a PostgreSQL server for Prefect (prefect_db)
- prefect-server  a local Prefect server (SQLite under ``$FLEETFLOW_HOME/prefect`` unless told
                  otherwise), unless ``PREFECT_API_URL`` names one already
- executor        applies the deployments and automations and runs their flow runs
                  (``fleetflow executor --name platform --deploy``)
- watch           the label watcher (``fleetflow watch``)
- api             the webhook API (``fleetflow api``)

Every process's command line holds ``--home $FLEETFLOW_HOME`` (or, for the Prefect server, its
port), so ``down`` stops exactly what ``up`` started and nothing else.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from fleetflow import config
from fleetflow.errors import UsageError
from fleetflow.supervisor import prefect_db, processes, readiness, server
from fleetflow.supervisor.state import PlatformState, load, log, save

Progress = Callable[[str], None]
PARTS = ("prefect-db", "prefect-server", "executor", "watch", "api")
PROCESSES = PARTS[1:]  # prefect-db is PostgreSQL's own process tree, started and stopped by pg_ctl
DEPLOYMENTS = 9  # one per flow but watch-labels (the watcher runs as its own process)
EXECUTOR_READY = "executor ready"


def _fleetflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "fleetflow.cli.main", "--home", str(config.home()), *args]


def _deployments_ready(api_url: str) -> bool:
    request = urllib.request.Request(  # noqa: S310 - the loopback Prefect API
        f"{api_url}/deployments/filter",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback API
            return len(json.loads(response.read())) >= DEPLOYMENTS
    except OSError:
        return False


def _log_says(path: Path, text: str, since: int) -> bool:
    """Whether the log says ``text`` after byte ``since`` (logs are appended to across restarts)."""
    try:
        with path.open("rb") as log_file:
            log_file.seek(since)
            return text.encode() in log_file.read()
    except OSError:
        return False


class _Starter:
    """Starts the parts that do not run yet, recording each in the state before awaiting it."""

    def __init__(self, progress: Progress, env: dict[str, str]) -> None:
        self.progress = progress
        self.state = load()
        for part, pid in list(self.state.pids.items()):
            if part not in PROCESSES:  # a part of an older fleetflow (e.g. "serve"): it must not run on
                processes.stop(pid, self.state.markers.get(part, "\0"))
                self.state.markers.pop(part, None)
            if not processes.is_ours(pid, self.state.markers.get(part, "\0")):
                self.state.pids.pop(part)
        self.env = dict(os.environ, **env)

    def start(
        self,
        part: str,
        argv: list[str],
        marker: str,
        what: str,
        check: Callable[[], bool],
        env: dict[str, str] | None = None,
        says: str = "",
    ) -> None:
        """Start ``part`` unless it runs; ready when ``check()`` holds and its log says ``says`` anew."""
        if part in self.state.pids:
            self.progress(f"{part}: already running (pid {self.state.pids[part]})")
            return
        self.progress(f"{part}: starting ...")
        since = log(part).stat().st_size if log(part).exists() else 0
        pid = processes.start(argv, log(part), self.env if env is None else env)
        self.state.pids[part], self.state.markers[part] = pid, marker
        save(self.state)
        readiness.wait_until(
            f"{part} ({what})",
            lambda: check() and (not says or _log_says(log(part), says, since)),
            lambda: processes.child_running(pid),
            log(part),
            timeout=180.0,
        )
        self.progress(f"{part}: ready")

    def server(self, prefect_db_choice: str | None) -> None:
        """The Prefect server (and its database), or the external one ``PREFECT_API_URL`` names."""
        state = self.state
        external = os.environ.get("PREFECT_API_URL") and not state.own_server
        if external:
            if prefect_db_choice is not None:
                raise UsageError(
                    "--prefect-db is for the Prefect server fleetflow starts; PREFECT_API_URL names another"
                )
            state.api_url = os.environ["PREFECT_API_URL"].rstrip("/")
        else:
            running = "prefect-server" in state.pids
            state.prefect_db = prefect_db.choose(prefect_db_choice, state.prefect_db, running)
            save(state)
            if not running:  # the previous port when it is free, so a bookmarked UI still works
                previous = int(server.port_of(state.api_url)) if state.own_server and state.api_url else 0
                port = previous if previous and not processes.port_in_use(previous) else processes.free_port()
                state.api_url, state.own_server = f"http://127.0.0.1:{port}/api", True
            db_env = prefect_db.prepare(state.prefect_db, self.progress)
            self.env["PREFECT_HOME"] = server.prefect_home()
            self.start(
                "prefect-server",
                server.argv(state.api_url),
                server.marker(state.api_url),
                "GET /api/health",
                lambda: server.healthy(state.api_url),
                env=dict(server.env(prefect_db.server_env(self.env), state.api_url), **db_env),
            )
        self.env["PREFECT_API_URL"] = state.api_url
        save(state)


def up_server(progress: Progress, *, prefect_db_choice: str | None = None) -> PlatformState:
    """Only the Prefect server part (with its database): what a caller needing just the API starts."""
    starter = _Starter(progress, {})
    starter.server(prefect_db_choice)
    return starter.state


def up(
    progress: Progress,
    *,
    local_chart: bool,
    webhook_port: int,
    env: dict[str, str],
    prefect_db_choice: str | None = None,
    before_workers: Callable[[str], None] | None = None,
) -> PlatformState:
    """Start what is not running; ``before_workers(api_url)`` runs once the Prefect API answers."""
    starter = _Starter(progress, env)
    starter.server(prefect_db_choice)
    state = starter.state
    if before_workers is not None:
        before_workers(state.api_url)
    home_marker = f"--home {config.home()}"
    chart = ["--local-chart"] if local_chart else []
    starter.start(
        "executor",
        _fleetflow("executor", "--name", "platform", "--deploy", *chart),
        home_marker,
        f"{DEPLOYMENTS} deployments registered and '{EXECUTOR_READY}' logged",
        lambda: _deployments_ready(state.api_url),
        says=EXECUTOR_READY,
    )
    starter.start(
        "watch",
        _fleetflow("watch"),
        home_marker,
        "first sync of the registry",
        lambda: True,
        says="synced",
    )
    state.webhook_port = state.webhook_port or webhook_port or processes.free_port()
    starter.start(
        "api",
        _fleetflow("api", "--port", str(state.webhook_port)),
        home_marker,
        "GET /healthz",
        lambda: readiness.probe(f"http://127.0.0.1:{state.webhook_port}/healthz")[0],
    )
    save(state)
    return state


def status() -> list[tuple[str, str, str]]:
    state = load()
    rows = []
    for part in PARTS:
        if part == "prefect-db":
            if state.own_server:
                sqlite = Path(server.prefect_home()) / "prefect.db"
                rows.append((part, *prefect_db.status(state.prefect_db or prefect_db.SQLITE, sqlite)))
            continue
        if part == "prefect-server" and not state.own_server:
            rows.append((part, "External" if state.api_url else "Stopped", state.api_url))
            continue
        pid = state.pids.get(part)
        running = bool(pid) and processes.is_ours(pid, state.markers.get(part, "\0"))
        where = {
            "prefect-server": server.ui_url(state.api_url),
            "api": f"http://127.0.0.1:{state.webhook_port}/v1/databases",
        }.get(part, "")
        rows.append((part, "Running" if running else "Stopped", where))
    return rows


def down(progress: Progress) -> None:
    """Stop every process ``up`` started (later parts first), then fleetflow's PostgreSQL; data stays."""
    state = load()
    for part in [*reversed(PROCESSES), *state.pids]:  # then parts of an older fleetflow, if any
        pid = state.pids.pop(part, None)
        if pid:
            processes.stop(pid, state.markers.get(part, "\0"))
            progress(f"{part}: stopped")
    save(state)
    if state.own_server:
        prefect_db.stop(state.prefect_db, progress)
