"""``fleetflow up``: the whole platform as background processes, each checked before it counts.

Parts, started in order and each awaited by its own readiness check (polled with a deadline):

- prefect-server  a local Prefect server with SQLite under ``$FLEETFLOW_HOME/prefect``, unless
                  ``PREFECT_API_URL`` names one already
- serve           the deployments and automations, run here with a 1 s poll (``fleetflow serve``)
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fleetflow import config
from fleetflow.fleet import processes, readiness

Progress = Callable[[str], None]
PARTS = ("prefect-server", "serve", "watch", "api")
DEPLOYMENTS = 7  # one per flow but watch-labels (the watcher runs as its own process)


@dataclass
class PlatformState:
    api_url: str = ""
    webhook_port: int = 0
    own_server: bool = False
    pids: dict[str, int] = field(default_factory=dict)
    markers: dict[str, str] = field(default_factory=dict)


def root() -> Path:
    return config.home() / "platform"


def _state_path() -> Path:
    return root() / "state.json"


def load() -> PlatformState:
    path = _state_path()
    return PlatformState(**json.loads(path.read_text())) if path.exists() else PlatformState()


def _save(state: PlatformState) -> None:
    root().mkdir(parents=True, exist_ok=True)
    tmp = _state_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(_state_path())


def _log(part: str) -> Path:
    return root() / "logs" / f"{part}.log"


def _fleetflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "fleetflow.cli.main", "--home", str(config.home()), *args]


def _get(url: str) -> bool:
    ok, _ = readiness.probe(url)
    return ok


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


def _await(what: str, check: Callable[[], bool], pid: int, part: str, timeout: float = 120.0) -> None:
    readiness.wait_until(f"{part} ({what})", check, lambda: processes.child_running(pid), _log(part), timeout)


def up(
    progress: Progress,
    *,
    local_chart: bool,
    webhook_port: int,
    env: dict[str, str],
    before_workers: Callable[[str], None] | None = None,
) -> PlatformState:
    """Start what is not running; ``before_workers(api_url)`` runs once the Prefect API answers."""
    state = load()
    for part, pid in list(state.pids.items()):
        if not processes.is_ours(pid, state.markers.get(part, "\0")):
            state.pids.pop(part)
    child_env = dict(os.environ, **env, PREFECT_SERVER_ANALYTICS_ENABLED="false")

    def start(part: str, argv: list[str], marker: str, what: str, check: Callable[[], bool]) -> None:
        if part in state.pids:
            progress(f"{part}: already running (pid {state.pids[part]})")
            return
        progress(f"{part}: starting ...")
        pid = processes.start(argv, _log(part), child_env)
        state.pids[part], state.markers[part] = pid, marker
        _save(state)
        _await(what, check, pid, part)
        progress(f"{part}: ready")

    if os.environ.get("PREFECT_API_URL") and not state.own_server:
        state.api_url = os.environ["PREFECT_API_URL"].rstrip("/")
    else:
        if not state.api_url or "prefect-server" not in state.pids:
            port = processes.free_port()
            state.api_url, state.own_server = f"http://127.0.0.1:{port}/api", True
        port_text = state.api_url.rsplit(":", 1)[1].split("/")[0]
        child_env["PREFECT_HOME"] = str(config.home() / "prefect")
        start(
            "prefect-server",
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", port_text],
            f"server start --host 127.0.0.1 --port {port_text}",
            "GET /api/health",
            lambda: _get(f"{state.api_url}/health"),
        )
    child_env["PREFECT_API_URL"] = state.api_url
    _save(state)
    if before_workers is not None:
        before_workers(state.api_url)
    home_marker = f"--home {config.home()}"
    chart = ["--local-chart"] if local_chart else []
    start(
        "serve",
        _fleetflow("serve", *chart, "--poll", "1"),
        home_marker,
        f"{DEPLOYMENTS} deployments registered",
        lambda: _deployments_ready(state.api_url),
    )
    watch_log = _log("watch")
    start(
        "watch",
        _fleetflow("watch"),
        home_marker,
        "first sync of the registry",
        lambda: "synced" in watch_log.read_text(errors="replace") if watch_log.exists() else False,
    )
    state.webhook_port = state.webhook_port or webhook_port or processes.free_port()
    start(
        "api",
        _fleetflow("api", "--port", str(state.webhook_port)),
        home_marker,
        "GET /healthz",
        lambda: _get(f"http://127.0.0.1:{state.webhook_port}/healthz"),
    )
    _save(state)
    return state


def status() -> list[tuple[str, str, str]]:
    state = load()
    rows = []
    for part in PARTS:
        pid = state.pids.get(part)
        running = bool(pid) and processes.is_ours(pid, state.markers.get(part, "\0"))
        if part == "prefect-server" and not state.own_server:
            rows.append((part, "External" if state.api_url else "Stopped", state.api_url))
            continue
        where = {
            "prefect-server": state.api_url.removesuffix("/api"),
            "api": f"http://127.0.0.1:{state.webhook_port}/v1/databases",
        }.get(part, "")
        rows.append((part, "Running" if running else "Stopped", where))
    return rows


def down(progress: Progress) -> None:
    state = load()
    for part in reversed(PARTS):
        pid = state.pids.pop(part, None)
        if pid:
            processes.stop(pid, state.markers.get(part, "\0"))
            progress(f"{part}: stopped")
    _save(state)
