"""The Prefect server part of ``fleetflow up``: its UI reaches its own API, and it can run on PostgreSQL.

Only the server part is started (``platform.up_server``), each test in its own FLEETFLOW_HOME;
``platform.down`` stops what it started.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

import fleetflow.supervisor as platform
from fleetflow.supervisor import pgserver, prefect_db, readiness, state
from fleetflow.supervisor.processes import is_ours

pytestmark = pytest.mark.integration


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("FLEETFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    try:
        yield tmp_path / "home"
    finally:
        platform.down(lambda _message: None)
        pgserver.destroy(prefect_db.data_root())  # its data may live outside tmp_path (see LocalPostgres)


def get_json(url: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def rows() -> dict[str, tuple[str, str]]:
    return {part: (status, where) for part, status, where in platform.status()}


def test_the_ui_is_told_its_own_servers_api(home: Path) -> None:
    started = platform.up_server(lambda _message: None)
    ui = started.api_url.removesuffix("/api")
    assert started.api_url != "http://127.0.0.1:4200/api", "the test needs a server on another port"
    assert get_json(f"{ui}/ui-settings")["api_url"] == started.api_url
    assert rows()["prefect-server"] == ("Running", ui)
    assert rows()["prefect-db"] == ("SQLite", str(home / "prefect" / "prefect.db"))


def connection() -> dict[str, str]:
    """Where Prefect's database is, from the server's owner-only profile (socket, port, passfile)."""
    profile = (state.root() / "prefect-server" / "profiles.toml").read_text()
    url = json.loads(profile.rsplit(" = ", 1)[-1])
    return {k: unquote(v) for k, v in (p.split("=", 1) for p in url.split("?", 1)[1].split("&"))}


def psql(sql: str) -> str:
    """``sql`` in Prefect's database, as a user would run it: over the socket, password from the passfile."""
    where = connection()
    argv = ["/usr/bin/psql", "-h", where["host"], "-p", where["port"], "-U", "prefect", "-d", "prefect"]
    done = subprocess.run(
        [*argv, "-w", "-At", "-c", sql],
        env={"PATH": os.environ["PATH"], "PGPASSFILE": where["passfile"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_prefect_on_postgres_started_and_stopped_by_fleetflow(home: Path) -> None:
    started = platform.up_server(lambda _message: None, prefect_db_choice="postgres")
    assert readiness.probe(f"{started.api_url}/health")[0]
    assert get_json(f"{started.api_url.removesuffix('/api')}/ui-settings")["api_url"] == started.api_url
    status, where = rows()["prefect-db"]
    assert status == "Running", where
    assert where.startswith("postgresql://prefect@/prefect")

    # What the API writes lands in PostgreSQL (and no SQLite database appears).
    get_json(f"{started.api_url}/flows/", {"name": "written-through-the-api"})
    assert "written-through-the-api" in psql("select name from flow").splitlines()
    assert not (home / "prefect" / "prefect.db").exists()

    # The role's password is on no command line, in no environment, state or log.
    password = Path(connection()["passfile"]).read_text().strip().rsplit(":", 1)[1]
    assert len(password) >= 16
    pid = started.pids["prefect-server"]
    for exposed in (Path(f"/proc/{pid}/cmdline"), Path(f"/proc/{pid}/environ"), state.root() / "state.json"):
        assert password.encode() not in exposed.read_bytes(), exposed
    for log in (state.root() / "logs").glob("*.log"):
        assert password not in log.read_text(errors="replace"), log

    platform.down(lambda _message: None)
    assert rows()["prefect-db"][0] == "Stopped"
    assert not is_ours(pid, started.markers["prefect-server"])

    # A second up without --prefect-db reuses the recorded choice and the data.
    again = platform.up_server(lambda _message: None)
    assert again.prefect_db == "postgres"
    assert rows()["prefect-db"][0] == "Running"
    names = [f["name"] for f in get_json(f"{again.api_url}/flows/filter", {})]
    assert "written-through-the-api" in names


def test_prefect_on_a_postgresql_the_user_runs(home: Path, tmp_path: Path) -> None:
    users_root = tmp_path / "users-postgres"
    theirs = pgserver.start(users_root, lambda _message: None)
    try:
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"*:*:prefect:prefect:{theirs.password}\n")
        passfile.chmod(0o600)
        url = (
            f"postgresql+asyncpg://prefect@/prefect?host={theirs.host}&port={theirs.port}&passfile={passfile}"
        )
        started = platform.up_server(lambda _message: None, prefect_db_choice=url)
        get_json(f"{started.api_url}/flows/", {"name": "in-the-users-database"})
        assert rows()["prefect-db"] == ("External", url)
        platform.down(lambda _message: None)
        assert pgserver.status(users_root)[0] == "Running", "down must leave the user's PostgreSQL alone"
        again = platform.up_server(lambda _message: None)
        names = [f["name"] for f in get_json(f"{again.api_url}/flows/filter", {})]
        assert "in-the-users-database" in names
    finally:
        platform.down(lambda _message: None)
        pgserver.destroy(users_root)
