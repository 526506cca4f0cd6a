"""The database of the Prefect server fleetflow starts (``fleetflow up --prefect-db``).

- ``sqlite`` (the default): Prefect's own default, ``$FLEETFLOW_HOME/prefect/prefect.db``
- ``postgres``: a PostgreSQL server fleetflow starts and stops, with its data under
  ``$FLEETFLOW_HOME/platform/prefect-db`` (role and database ``prefect``), reached over its Unix socket
- a URL ``postgresql+asyncpg://...``: a PostgreSQL the user runs

The choice is recorded in the platform state, so the next ``up`` reuses it. Secrets reach neither
a command line nor an environment: the server reads its database URL from an owner-only Prefect
profile (``PREFECT_PROFILES_PATH``). For fleetflow's own PostgreSQL that URL holds no password
either (asyncpg reads it from an owner-only passfile); a URL the user gives is kept owner-only and
shown with its password masked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

from fleetflow.errors import UsageError
from fleetflow.files import write_atomic
from fleetflow.supervisor import pgserver, state

SQLITE, POSTGRES, URL = "sqlite", "postgres", "url"
SCHEME = "postgresql+asyncpg://"
PROFILE = "fleetflow-prefect-server"
# Settings that would override the profile's database (the environment wins over a profile).
_OVERRIDING = ("PREFECT_SERVER_DATABASE_", "PREFECT_API_DATABASE_", "PREFECT_PROFILE")


def kind(choice: str) -> str:
    """``sqlite``, ``postgres`` or ``url`` for what ``--prefect-db`` was given."""
    if choice in (SQLITE, POSTGRES):
        return choice
    if choice.startswith(SCHEME) and len(choice) > len(SCHEME):
        return URL
    raise UsageError(f"--prefect-db must be sqlite, postgres or a {SCHEME}... URL, not {redact(choice)!r}")


def data_root() -> Path:
    """Where fleetflow's PostgreSQL for Prefect keeps its data, passwords and log."""
    return state.root() / "prefect-db"


def _secrets() -> Path:
    path = state.root() / "prefect-server"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _write_secret(name: str, text: str) -> Path:
    path = _secrets() / name
    write_atomic(path, text, 0o600)
    return path


def _user_url() -> str:
    path = _secrets() / "database-url"
    return path.read_text().strip() if path.exists() else ""


def choose(requested: str | None, recorded: str, server_running: bool) -> str:
    """The database to use: ``requested`` (a URL is kept owner-only), else the recorded one, else SQLite.

    A running server keeps its database: switching needs ``fleetflow down`` first.
    """
    recorded = recorded or SQLITE
    if requested is None:
        return recorded
    wanted = kind(requested)
    same = wanted == recorded and (wanted != URL or requested == _user_url())
    if server_running and not same:
        raise UsageError(
            f"the Prefect server runs on {describe(recorded)}; run `fleetflow down` before switching "
            f"to {describe(wanted) if wanted != URL else redact(requested)}"
        )
    if wanted == URL:
        _write_secret("database-url", requested + "\n")
    return wanted


def prepare(chosen: str, progress: Callable[[str], None]) -> dict[str, str]:
    """Start fleetflow's PostgreSQL when ``chosen`` says so; the Prefect server's extra environment.

    The returned variables hold no secret: they name the owner-only profile with the database URL.
    """
    if chosen == SQLITE:
        return {}
    if chosen == POSTGRES:
        already = pgserver.status(data_root())[0] == "Running"
        progress("prefect-db: already running" if already else "prefect-db: starting ...")
        running = pgserver.start(data_root(), progress)
        # .pgpass format; the password is URL-safe base64, so it needs no escaping.
        passfile = _write_secret("pgpass", f"*:*:{pgserver.DATABASE}:{pgserver.ROLE}:{running.password}\n")
        query = urlencode({"host": running.host, "port": running.port, "passfile": str(passfile)})
        url = f"{SCHEME}{pgserver.ROLE}@/{pgserver.DATABASE}?{query}"
        if not already:
            progress("prefect-db: ready")
    else:
        url = _user_url()
        if not url:
            raise UsageError("the recorded Prefect database URL is gone; pass it again with --prefect-db URL")
    key = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
    profile = _write_secret(
        "profiles.toml", f'active = "{PROFILE}"\n\n[profiles.{PROFILE}]\n{key} = {json.dumps(url)}\n'
    )
    return {"PREFECT_PROFILES_PATH": str(profile), "PREFECT_PROFILE": PROFILE}


def server_env(base: dict[str, str]) -> dict[str, str]:
    """``base`` without the settings that would override the database ``prepare`` chose."""
    return {k: v for k, v in base.items() if not k.startswith(_OVERRIDING)}


def stop(chosen: str, progress: Callable[[str], None]) -> None:
    if chosen == POSTGRES and pgserver.status(data_root())[0] == "Running":
        pgserver.stop(data_root())
        progress("prefect-db: stopped")


def status(chosen: str, sqlite_file: Path) -> tuple[str, str]:
    """(STATUS, ADDRESS) of the Prefect server's database."""
    if chosen == POSTGRES:
        return pgserver.status(data_root())
    if chosen == URL:
        return "External", redact(_user_url())
    return "SQLite", str(sqlite_file)


def describe(chosen: str) -> str:
    return {SQLITE: "SQLite", POSTGRES: "fleetflow's PostgreSQL", URL: "the PostgreSQL at the given URL"}[
        chosen
    ]


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
