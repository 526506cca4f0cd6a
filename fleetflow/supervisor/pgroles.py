"""Login roles and their private databases on a :class:`~supervisor.postgres.LocalPostgres`.

Each role fleetflow makes gets one database it owns and alone may use: PUBLIC may not connect
to it (the server itself already keeps PUBLIC out of ``postgres``, ``template1`` and the
``public`` schemas). Passwords never reach a command line, an exception or a log: a role gets a
SCRAM verifier computed by libpq (``PQencryptPasswordConn``, so the server never sees the
plaintext and a failing statement cannot log it), and error text is the server's message,
redacted. A role's password is kept owner-only in ``root/roles/<role>.password`` so that
:func:`ensure_database` can be repeated and return the same password until asked to rotate it.

Kept apart from :mod:`supervisor.postgres` because that module is about one server's process
and files, this one about what lives inside it; both the Prefect server's database
(:mod:`supervisor.pgserver`) and the local CloudNativePG stand-in's are made here.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from fleetflow.errors import FleetError, UsageError
from fleetflow.supervisor.postgres import (
    SUPERUSER,
    Endpoint,
    LocalPostgres,
    execute,
    read_secret,
    write_secret,
)

_ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_RESERVED_DATABASES = frozenset({"postgres", "template0", "template1"})

_locks_guard = threading.Lock()
_locks: dict[tuple[Path, str], threading.Lock] = {}  # (server root, role): one change at a time


def validate_name(kind: str, value: str) -> str:
    """``value`` if it is a plain lower-case SQL identifier fleetflow may manage, else UsageError."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise UsageError(f"invalid {kind} name {value!r}: must match {_NAME.pattern}")
    if value.startswith("pg_"):
        raise UsageError(f"invalid {kind} name {value!r}: names starting with pg_ are reserved")
    if kind == "role" and value == SUPERUSER:
        raise UsageError(f"invalid role name {value!r}: it is the superuser")
    if kind == "database" and value in _RESERVED_DATABASES:
        raise UsageError(f"invalid database name {value!r}: it is reserved")
    return value


def password_file(server: LocalPostgres, role: str) -> Path:
    return server.root / "roles" / f"{role}.password"


def pin_password(server: LocalPostgres, role: str, password: str) -> None:
    """Make the next :func:`ensure_database` for ``role`` assert ``password`` (kept owner-only)."""
    path = password_file(server, role)
    if read_secret(path) != password:
        write_secret(path, password)


def has_password(server: LocalPostgres, role: str) -> bool:
    """Whether fleetflow knows ``role``'s password (pinned, or set by :func:`ensure_database`)."""
    return read_secret(password_file(server, role)) is not None


def ensure_database(
    server: LocalPostgres, role: str, dbname: str, *, rotate: bool = False, comment: str | None = None
) -> str:
    """Make login role ``role`` and database ``dbname`` owned by it exist; return the role's password.

    Only ``role`` (and superusers) may connect to ``dbname``. Repeating the call returns the
    same password (re-asserting it on the role). A role that exists without a password
    fleetflow knows is an error unless ``rotate`` asks for a new one. ``comment``, when
    given, is set on the database (see :func:`database_comments`).
    """
    validate_name("role", role)
    validate_name("database", dbname)
    with _role_locked(server, role), server.admin() as conn:
        stored = read_secret(password_file(server, role))
        exists = _role_exists(conn, role)
        if exists and stored is None and not rotate:
            raise FleetError(
                f"role {role} exists but fleetflow does not know its password; ensure it with rotate=True"
            )
        password = stored if stored is not None and not rotate else secrets.token_urlsafe(24)
        write_secret(password_file(server, role), password)
        # libpq computes the SCRAM verifier: the server (and its log) never sees the password.
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
        r, d = sql.Identifier(role), sql.Identifier(dbname)
        verb = sql.SQL("ALTER" if exists else "CREATE")
        execute(
            conn,
            sql.SQL("{} ROLE {} " + _ROLE_ATTRIBUTES + " PASSWORD {}").format(
                verb, r, sql.Literal(verifier.decode("ascii"))
            ),
            hidden=(password,),
        )
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if found is None:  # CREATE DATABASE cannot share a transaction with other statements
            execute(conn, sql.SQL("CREATE DATABASE {} OWNER {}").format(d, r))
        statements = [
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(d, r),
            sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(d),
            sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(d, r),
        ]
        if comment is not None:
            statements.append(sql.SQL("COMMENT ON DATABASE {} IS {}").format(d, sql.Literal(comment)))
        execute(conn, sql.SQL("; ").join(statements))
        return password


def drop_database(server: LocalPostgres, role: str, dbname: str) -> None:
    """Drop ``dbname`` (disconnecting its sessions), then ``role`` unless it owns another database."""
    validate_name("role", role)
    validate_name("database", dbname)
    with _role_locked(server, role), server.admin() as conn:
        execute(conn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        owns = conn.execute(
            "SELECT 1 FROM pg_database d JOIN pg_roles r ON d.datdba = r.oid WHERE r.rolname = %s",
            (role,),
        ).fetchone()
        if owns is None:
            execute(conn, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            password_file(server, role).unlink(missing_ok=True)


def database_comments(server: LocalPostgres) -> dict[str, str]:
    """The comment of every database that has one, by database name."""
    with server.admin() as conn:
        rows = conn.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE shobj_description(oid, 'pg_database') IS NOT NULL"
        ).fetchall()
    return {str(name): str(comment) for name, comment in rows}


def run_psql(
    psql: Path,
    endpoint: Endpoint,
    sql: str,
    *,
    user: str,
    password: str,
    dbname: str,
    secrets_: Sequence[str] = (),
) -> str:
    """Run ``sql`` (from stdin) with psql over TCP as ``user``, the way a consumer of a database would.

    The password travels only in ``PGPASSWORD``. Raises FleetError with psql's error line, with
    ``password`` and ``secrets_`` redacted.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=password, PGCONNECT_TIMEOUT="10", PGSSLMODE="disable", PGAPPNAME="fleetflow")
    argv = [str(psql), "-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"]
    argv += ["-h", endpoint.host, "-p", str(endpoint.port), "-U", user, "-d", dbname, "-f", "-"]
    where = f"psql as {user} on {dbname} at {endpoint.host}:{endpoint.port}"
    try:
        proc = subprocess.run(
            argv, input=sql, capture_output=True, text=True, env=env, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        raise FleetError(f"{where} timed out") from None
    if proc.returncode != 0:
        line = _error_line(proc.stderr) or f"psql exited {proc.returncode}"
        for secret in (password, *secrets_):
            if secret:
                line = line.replace(secret, "***")
        raise FleetError(f"{where} failed: {line}")
    return proc.stdout.strip()


def _role_exists(conn: psycopg.Connection[Any], role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


@contextlib.contextmanager
def _role_locked(server: LocalPostgres, role: str) -> Iterator[None]:
    """One change at a time per role of a server in this process; different roles proceed in parallel."""
    with _locks_guard:
        lock = _locks.setdefault((server.root, role), threading.Lock())
    with lock:
        yield


def _error_line(stderr: str) -> str:
    """psql's first error line, without the statement excerpt (``LINE n:``) it may add."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in lines:
        if any(tag in line for tag in ("ERROR:", "FATAL:", "error:")):
            return " ".join(line.split())
    return " ".join(lines[0].split()) if lines and not lines[0].startswith("LINE ") else ""
