"""One real PostgreSQL server whose state lives under a directory: its lifecycle and its superuser.

The local fleet has no kubelet, so a CloudNativePG Cluster never gets Pods; databases for the
local fleet (and the Prefect server's, ``fleetflow up --prefect-db postgres``) come from such a
server instead: ``initdb``, ``pg_ctl`` and ``postgres`` from Debian's packages
(:mod:`supervisor.pgsystem` finds them and the user they run as), listening only on 127.0.0.1
on a free port (the previous one when it is still free).

This module initialises, starts, stops, reports and destroys the server, and holds its
superuser: a password made at ``initdb`` and kept owner-only in ``root/superuser-password``,
and a few reused superuser connections through psycopg (libpq) over TCP, so there is no psql
process per statement. Roles, databases and their passwords are :mod:`supervisor.pgroles`'.
Error text is reduced to the server's message and redacted: a password never reaches an
exception or a log. Every start re-asserts that PUBLIC may connect to neither ``postgres`` nor
``template1`` and that ``public`` schemas grant nothing to PUBLIC (set on ``template1``, which
every new database copies).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from fleetflow import config
from fleetflow.errors import FleetError, UsageError
from fleetflow.files import write_atomic
from fleetflow.supervisor import pgsystem, processes
from fleetflow.supervisor.pgsystem import ServerUser

SUPERUSER = "postgres"
HOST = "127.0.0.1"
START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections
CONNECT_TIMEOUT = 10  # seconds for a superuser connection
IDLE_CONNECTIONS = 8  # superuser connections kept open for reuse
_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
_UNSAFE_PATH_CHARS = set('"$`\\\n\r')  # pg_ctl puts -D and -l into a double-quoted shell command

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Endpoint:
    """Where the server listens; no credentials."""

    host: str
    port: int
    socket_dir: Path | None

    def url(self, user: str, dbname: str) -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{dbname}"


@dataclass(frozen=True)
class PostgresStatus:
    state: str  # Running, Stopped, Absent (never initialised)
    endpoint: Endpoint | None
    pid: int | None
    detail: str


def default_root() -> Path:
    return config.fleet_dir() / "postgres"


class LocalPostgres:
    """One PostgreSQL server whose state lives under ``root``."""

    def __init__(self, root: Path, *, bindir: Path | None = None, progress: Progress | None = None) -> None:
        self.root = root.expanduser().absolute()
        bad = _UNSAFE_PATH_CHARS & set(str(self.root))
        if bad:
            raise UsageError(
                f"PostgreSQL root {self.root} contains characters pg_ctl cannot pass: {sorted(bad)}"
            )
        self._bindir = bindir
        self._progress = progress or (lambda _message: None)
        self._guard = threading.Lock()
        self._idle: list[psycopg.Connection[Any]] = []  # superuser connections for reuse
        weakref.finalize(self, _close_all, self._idle)  # an instance dropped unclosed closes them too

    # -- paths -------------------------------------------------------------------------------

    @property
    def data_link(self) -> Path:
        """``root/data``: the data directory, or a link to it when it had to live elsewhere."""
        return self.root / "data"

    @property
    def data_dir(self) -> Path:
        return self.data_link.resolve() if self.data_link.is_symlink() else self.data_link

    @property
    def socket_dir(self) -> Path:
        return self.data_dir.parent / "run"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.root / "superuser-password"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Endpoint:
        """Initialise on first use, then start the server; no-op if it already runs."""
        with self._locked():
            endpoint = self._running_endpoint()
            if endpoint is not None:
                return endpoint
            user = ServerUser.detect()
            if not self._initialised():
                self._initdb(user)
            self._clear_stale_pidfile()
            pg_ctl = self._bin() / "pg_ctl"
            previous = pgsystem.read_int(self.root / "port")
            port = previous if previous and not processes.port_in_use(previous) else processes.free_port()
            if previous and port != previous:
                self._progress(f"postgres: port {previous} is taken; using {port}")
            for attempt in range(3):
                self._write_settings(user, port)
                offset = self.log_file.stat().st_size if self.log_file.exists() else 0
                argv: list[str | Path] = [pg_ctl, "start", "-D", self.data_dir, "-l", self.log_file]
                argv += ["-w", "-t", str(START_TIMEOUT), "-s"]
                proc = user.run(argv, cwd=self.data_dir.parent, timeout=START_TIMEOUT + 30)
                if proc.returncode == 0:
                    break
                log = pgsystem.read_from(self.log_file, offset)
                if attempt < 2 and ("could not bind" in log or "Address already in use" in log):
                    port = processes.free_port()
                    continue
                detail = (
                    pgsystem.problem(log)
                    or pgsystem.last_line(proc.stderr)
                    or f"pg_ctl exited {proc.returncode}"
                )
                raise FleetError(f"local PostgreSQL did not start: {detail} (log: {self.log_file})")
            (self.root / "port").write_text(f"{port}\n")
            endpoint = self._running_endpoint()
            if endpoint is None:
                raise FleetError(f"local PostgreSQL reported started but does not run (log: {self.log_file})")
            self.close()  # connections to an earlier run of the server are dead
            self._harden()
            return endpoint

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are disconnected); no-op if it is not running."""
        self.close()
        with self._locked():
            if self._running_pid() is None:
                self._clear_stale_pidfile()
                return
            user = ServerUser.detect()
            pg_ctl = self._bin() / "pg_ctl"
            for mode in ("fast", "immediate"):
                stop = [str(pg_ctl), "stop", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "-s"]
                proc = user.run(stop, cwd=self.data_dir.parent, timeout=90)
                if proc.returncode == 0 or self._running_pid() is None:
                    return
            raise FleetError(
                f"local PostgreSQL did not stop: {pgsystem.last_line(proc.stderr)} (log: {self.log_file})"
            )

    def status(self) -> PostgresStatus:
        if not self._initialised():
            return PostgresStatus("Absent", None, None, f"not initialised (no {self.data_dir})")
        pid = self._running_pid()
        endpoint = self._running_endpoint()
        if pid is not None and endpoint is not None:
            return PostgresStatus("Running", endpoint, pid, f"pid {pid}, data {self.data_dir}")
        stale = pgsystem.read_int(self.data_dir / "postmaster.pid")
        detail = f"stale postmaster.pid (pid {stale} is not this server); start recovers it" if stale else ""
        return PostgresStatus("Stopped", None, None, detail)

    def destroy(self) -> None:
        """Stop the server and delete its data, passwords and logs. Irrecoverable."""
        self.stop()
        data = self.data_dir
        if self.data_link.is_symlink():
            shutil.rmtree(data.parent, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the superuser's connections ---------------------------------------------------------

    @contextlib.contextmanager
    def admin(self) -> Iterator[psycopg.Connection[Any]]:
        """A superuser connection to database ``postgres`` (autocommit), reused across calls.

        A psycopg error escaping the block becomes a FleetError with the server's message only.
        """
        with self._guard:
            conn = self._idle.pop() if self._idle else None
        if conn is not None and (conn.closed or conn.broken or not _alive(conn)):
            conn.close()
            conn = None
        conn = conn or self._connect("postgres")
        try:
            yield conn
        except psycopg.Error as exc:  # a query that execute() did not wrap: no statement text, no secret
            conn.close()
            raise FleetError(f"local PostgreSQL: {message(exc, ())}") from None
        except BaseException:
            conn.close()  # whatever went wrong, the next call starts on a fresh connection
            raise
        with self._guard:
            if len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(conn)
                conn = None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close the reused superuser connections (they reopen on demand)."""
        with self._guard:
            idle = self._idle[:]
            self._idle.clear()
        _close_all(idle)

    def _connect(self, dbname: str) -> psycopg.Connection[Any]:
        endpoint = self._running_endpoint()
        if endpoint is None:
            raise FleetError(f"local PostgreSQL is not running (data {self.data_dir}); start it first")
        password = read_secret(self.password_file)
        if password is None:
            raise FleetError(f"the superuser password file {self.password_file} is missing")
        try:
            return psycopg.connect(
                host=endpoint.host,
                port=endpoint.port,
                user=SUPERUSER,
                password=password,
                dbname=dbname,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
                sslmode="disable",
                application_name="fleetflow",
            )
        except psycopg.Error as exc:
            where = f"{endpoint.host}:{endpoint.port}"
            raise FleetError(
                f"cannot connect to local PostgreSQL at {where}: {message(exc, (password,))}"
            ) from None

    def _harden(self) -> None:
        """PUBLIC may connect to no database and use no ``public`` schema (new databases copy template1)."""
        with self.admin() as conn:
            execute(conn, sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE postgres, template1 FROM PUBLIC"))
        with contextlib.closing(self._connect("template1")) as conn:
            execute(conn, sql.SQL("REVOKE ALL ON SCHEMA public FROM PUBLIC"))

    # -- internals ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One process at a time starts, stops or initialises this server (flock; released on a crash)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _bin(self) -> Path:
        if self._bindir is None:
            version = (self.data_dir / "PG_VERSION").read_text().strip() if self._initialised() else None
            self._bindir = pgsystem.find_bindir(version=version)
        return self._bindir

    def _initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def _initdb(self, user: ServerUser) -> None:
        if self.data_link.is_symlink() and not self.data_dir.exists():
            raise FleetError(
                f"the data directory {self.data_dir} (linked from {self.data_link}) is missing; "
                f"remove {self.data_link} to start with an empty server"
            )
        bindir = self._bin()
        user.place_data(self.root, self.data_link, self._progress)
        data = self.data_dir
        data.mkdir(mode=0o700, exist_ok=True)
        user.give(data)
        password = secrets.token_urlsafe(24)
        write_secret(self.password_file, password)
        user.initdb(bindir, data, SUPERUSER, password)
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# fleetflow rewrites this file before every start\ninclude_if_exists = 'fleetflow.conf'\n"
            )
        self._progress(f"postgres: initialised PostgreSQL {bindir.parent.name} in {data}")

    def _write_settings(self, user: ServerUser, port: int) -> None:
        socket_dir = self.socket_dir
        socket_dir.mkdir(mode=0o755, exist_ok=True)
        user.give(socket_dir)
        # A socket path longer than sun_path allows would stop the server: then TCP only.
        too_long = len(str(socket_dir / f".s.PGSQL.{port}")) > _SOCKET_PATH_MAX
        settings = {
            "listen_addresses": HOST,
            "port": str(port),
            "unix_socket_directories": "" if too_long else str(socket_dir),
            "password_encryption": "scram-sha-256",
            "log_min_error_statement": "panic",  # failing statements are not copied into the log
        }
        path = self.data_dir / "fleetflow.conf"
        write_atomic(
            path, "".join(f"{key} = {_conf_value(value)}\n" for key, value in settings.items()), 0o600
        )
        user.give(path)
        if not self.log_file.exists():
            self.log_file.touch(mode=0o600)
        user.give(self.log_file)

    def _running_pid(self) -> int | None:
        return pgsystem.postmaster_pid(self.data_dir)

    def _running_endpoint(self) -> Endpoint | None:
        if self._running_pid() is None:
            return None
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            port = int(lines[3])
        except (OSError, IndexError, ValueError):
            return None
        socket_dir = Path(lines[4]) if len(lines) > 4 and lines[4].strip() else None
        return Endpoint(HOST, port, socket_dir)

    def _clear_stale_pidfile(self) -> None:
        pidfile = self.data_dir / "postmaster.pid"
        stale = pgsystem.read_int(pidfile)
        if stale is None or self._running_pid() is not None:
            return
        pidfile.unlink(missing_ok=True)
        if self.socket_dir.is_dir():
            for leftover in self.socket_dir.glob(".s.PGSQL.*"):
                leftover.unlink(missing_ok=True)
        self._progress(f"postgres: removed a stale postmaster.pid (pid {stale} is not this server)")


def execute(
    conn: psycopg.Connection[Any], statement: sql.SQL | sql.Composed, hidden: Sequence[str] = ()
) -> None:
    """Run ``statement``; a failure is a FleetError with the server's message (never the statement)."""
    try:
        conn.execute(statement)
    except psycopg.Error as exc:
        raise FleetError(f"local PostgreSQL: {message(exc, hidden)}") from None


def message(exc: psycopg.Error, hidden: Sequence[str]) -> str:
    """The server's (or libpq's) one-line message, with ``hidden`` redacted."""
    diag = getattr(exc, "diag", None)
    text = (diag.message_primary if diag is not None else None) or str(exc)
    text = " ".join(text.split())
    for secret in hidden:
        if secret:
            text = text.replace(secret, "***")
    return text


def read_secret(path: Path) -> str | None:
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    return value or None


def write_secret(path: Path, value: str) -> None:
    """Write ``value`` owner-only, atomically (a reader sees the old or the new secret, never half)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, value + "\n", 0o600)


def _close_all(connections: list[psycopg.Connection[Any]]) -> None:
    for conn in connections:
        conn.close()


def _alive(conn: psycopg.Connection[Any]) -> bool:
    """Whether a reused connection still works (the server may have restarted meanwhile)."""
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _conf_value(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
