"""The PostgreSQL server fleetflow runs for Prefect, on Debian's packages.

Built on :mod:`supervisor.postgres` (the server, run as the ``postgres`` system user when we are
root) and :mod:`supervisor.pgroles` (the role and database, passwords kept owner-only); the local
fleet's CloudNativePG stand-in uses them too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleetflow.supervisor import pgroles
from fleetflow.supervisor.postgres import LocalPostgres

ROLE = DATABASE = "prefect"


@dataclass(frozen=True)
class Running:
    host: str  # the server's Unix socket directory, or 127.0.0.1 when it has none
    port: int
    password: str  # the role's; never printed


def start(root: Path, progress: Callable[[str], None]) -> Running:
    """Start the server (initialising it on first use) and make role and database ``prefect`` exist."""
    server = LocalPostgres(root, progress=progress)
    endpoint = server.start()
    password = pgroles.ensure_database(server, ROLE, DATABASE)
    host = str(endpoint.socket_dir) if endpoint.socket_dir else endpoint.host
    return Running(host, endpoint.port, password)


def stop(root: Path) -> None:
    """Stop the server; its data stays for the next start."""
    LocalPostgres(root).stop()


def status(root: Path) -> tuple[str, str]:
    """(Running|Stopped|Absent, detail)."""
    state = LocalPostgres(root).status()
    if state.endpoint is None:
        return state.state, state.detail
    where = state.endpoint.socket_dir or f"{state.endpoint.host}:{state.endpoint.port}"
    return state.state, f"postgresql://{ROLE}@/{DATABASE} ({where}, port {state.endpoint.port})"


def destroy(root: Path) -> None:
    """Stop the server and delete its data. Irrecoverable."""
    LocalPostgres(root).destroy()
