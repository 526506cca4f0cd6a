"""Choosing the Prefect server's database: what --prefect-db accepts, what is remembered, what is shown."""

from __future__ import annotations

import ast
import stat
from pathlib import Path

import pytest

from fleetflow.errors import UsageError
from fleetflow.supervisor import prefect_db

URL = "postgresql+asyncpg://prefect:s3cret-pw@db.example:5432/prefect"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLEETFLOW_HOME", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(("choice", "kind"), [("sqlite", "sqlite"), ("postgres", "postgres"), (URL, "url")])
def test_accepted_choices(choice: str, kind: str) -> None:
    assert prefect_db.kind(choice) == kind


def test_a_wrong_url_is_refused_without_echoing_its_password() -> None:
    with pytest.raises(UsageError) as caught:
        prefect_db.kind("postgresql://prefect:s3cret-pw@db.example/prefect")
    assert "s3cret-pw" not in str(caught.value)
    assert "postgresql+asyncpg://" in str(caught.value)


def test_redact_masks_only_the_password() -> None:
    assert prefect_db.redact(URL) == "postgresql+asyncpg://prefect:***@db.example:5432/prefect"
    plain = "postgresql+asyncpg://prefect@/prefect?host=/run/pg"
    assert prefect_db.redact(plain) == plain


def test_the_choice_is_remembered_and_a_running_server_keeps_its_database() -> None:
    assert prefect_db.choose(None, "", server_running=False) == "sqlite"
    assert prefect_db.choose(None, "postgres", server_running=False) == "postgres"
    assert prefect_db.choose("sqlite", "postgres", server_running=False) == "sqlite"
    assert prefect_db.choose("postgres", "postgres", server_running=True) == "postgres"
    with pytest.raises(UsageError, match="fleetflow down"):
        prefect_db.choose("postgres", "", server_running=True)


def test_a_users_url_is_kept_owner_only_and_reaches_the_server_through_a_profile(home: Path) -> None:
    assert prefect_db.choose(URL, "sqlite", server_running=False) == "url"
    env = prefect_db.prepare("url", lambda _message: None)
    assert all("s3cret-pw" not in value for value in env.values())
    profile = Path(env["PREFECT_PROFILES_PATH"])
    assert URL in profile.read_text()
    for path in (profile, *profile.parent.iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(profile.parent.stat().st_mode) == 0o700
    assert prefect_db.status("url", home / "unused.db") == ("External", prefect_db.redact(URL))
    # The same URL again is no switch; another one is, while the server runs.
    assert prefect_db.choose(URL, "url", server_running=True) == "url"
    with pytest.raises(UsageError) as caught:
        prefect_db.choose(URL.replace("5432", "5433"), "url", server_running=True)
    assert "s3cret-pw" not in str(caught.value)


def test_the_server_environment_cannot_override_the_chosen_database() -> None:
    base = {
        "PATH": "/usr/bin",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": "sqlite+aiosqlite:///elsewhere.db",
        "PREFECT_API_DATABASE_PASSWORD": "x",
        "PREFECT_PROFILE": "mine",
    }
    assert prefect_db.server_env(base) == {"PATH": "/usr/bin"}


def test_only_pgserver_uses_the_local_postgres_tooling() -> None:
    package = Path(prefect_db.__file__).parent
    tooling = (
        "fleetflow.supervisor.postgres",
        "fleetflow.supervisor.pgroles",
        "fleetflow.supervisor.pgsystem",
    )
    users = set()
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module or ""]
            if any(name.startswith(tooling) for name in names):
                users.add(module.name)
    assert users - {"postgres.py", "pgroles.py", "pgsystem.py"} == {"pgserver.py"}
