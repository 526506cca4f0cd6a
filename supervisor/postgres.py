"""A real PostgreSQL server for the local fleet, run from Debian's packages.

The local fleet has no kubelet, so a CloudNativePG Cluster never gets Pods; databases for the
local fleet come from this one server instead: ``initdb``, ``pg_ctl`` and ``postgres`` from the
newest ``/usr/lib/postgresql/<version>/bin`` (``apt-get install postgresql``), listening only
on 127.0.0.1 on a free port (the previous one when it is still free).

PostgreSQL refuses to run as root. When we are root the server runs as the Debian package's
``postgres`` user, which owns the data directory, socket directory and log; the files holding
passwords stay ours and owner-only. That user must be able to traverse every directory above
the data directory; when it cannot (``/root`` is 0700, and so is pytest's tmp root) the data
lives in ``~postgres/fleetflow/<digest of root>/`` instead and ``root/data`` links to it.

Administration goes through psycopg (libpq) over TCP, on a few reused superuser connections
(no psql process per statement). Passwords never reach a command line, an exception or a log:
roles get a SCRAM verifier computed by libpq (``PQencryptPasswordConn``, so the server never
sees the plaintext and a failing statement cannot log it), and error text is reduced to the
server's message and redacted. A role's password is kept in ``root/roles/<role>.password`` so
that ``ensure_database`` can be repeated and return the same password until asked to rotate it.
A database is private to its owner: PUBLIC may not connect to it (nor to ``postgres`` and
``template1``), and ``public`` schemas grant nothing to PUBLIC (set on ``template1``, which
every new database copies).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import re
import secrets
import shutil
import subprocess
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from fleetflow import config
from fleetflow.errors import BootstrapError, FleetError, UsageError
from supervisor import processes

PG_BASE = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
SERVER_USER = "postgres"  # the Debian package's system user, used only when we are root
HOST = "127.0.0.1"
START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections
CONNECT_TIMEOUT = 10  # seconds for an admin connection
IDLE_CONNECTIONS = 8  # admin connections kept open for reuse
_ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
_TOOLS = ("initdb", "pg_ctl", "postgres", "psql")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_RESERVED_DATABASES = frozenset({"postgres", "template0", "template1"})
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


def find_bindir(base: Path = PG_BASE, version: str | None = None) -> Path:
    """The ``bin`` directory of PostgreSQL ``version``, or of the newest one installed."""
    candidates: list[tuple[tuple[int, ...], Path]] = []
    if base.is_dir():
        for entry in base.iterdir():
            bindir = entry / "bin"
            if re.fullmatch(r"\d+(\.\d+)*", entry.name) and all((bindir / t).is_file() for t in _TOOLS):
                candidates.append((tuple(int(p) for p in entry.name.split(".")), bindir))
    if version is not None:
        for _, bindir in candidates:
            if bindir.parent.name == version:
                return bindir
        raise BootstrapError(
            f"the data directory was initialised by PostgreSQL {version}, but {base}/{version}/bin "
            f"lacks {', '.join(_TOOLS)}; install it with: apt-get install postgresql-{version}"
        )
    if not candidates:
        raise BootstrapError(
            f"no PostgreSQL server found: no {base}/<version>/bin with {', '.join(_TOOLS)}; "
            "install it with: apt-get install postgresql"
        )
    return max(candidates)[1]


@dataclass(frozen=True)
class _ServerUser:
    """Whom the server runs as: ourselves, or the ``postgres`` user when we are root."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    home: Path
    foreign: bool  # True when it is not the user running fleetflow

    @classmethod
    def detect(cls) -> _ServerUser:
        if os.geteuid() != 0:
            entry = pwd.getpwuid(os.geteuid())
            return cls(os.geteuid(), os.getegid(), tuple(os.getgroups()), Path(entry.pw_dir), False)
        try:
            entry = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise BootstrapError(
                f"PostgreSQL refuses to run as root and there is no {SERVER_USER!r} user to run it as; "
                "apt-get install postgresql creates it"
            ) from None
        groups = tuple(os.getgrouplist(SERVER_USER, entry.pw_gid))
        return cls(entry.pw_uid, entry.pw_gid, groups, Path(entry.pw_dir), True)

    def can_traverse(self, path: Path) -> bool:
        """Whether this user may reach ``path``: search permission on it and every directory above."""
        for directory in (path, *path.parents):
            try:
                st = directory.stat()
            except OSError:
                return False
            if st.st_uid == self.uid:
                bit = 0o100
            elif st.st_gid in self.groups:
                bit = 0o010
            else:
                bit = 0o001
            if not st.st_mode & bit:
                return False
        return True

    def give(self, path: Path) -> None:
        if self.foreign:
            os.chown(path, self.uid, self.gid)


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
        self._idle: list[psycopg.Connection[Any]] = []  # admin connections for reuse
        self._role_locks: dict[str, threading.Lock] = {}
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

    def pin_password(self, role: str, password: str) -> None:
        """Make the next :meth:`ensure_database` for ``role`` assert ``password`` (kept owner-only)."""
        path = self._role_password_file(role)
        if _read_secret(path) != password:
            _write_secret(path, password)

    def has_password(self, role: str) -> bool:
        """Whether fleetflow knows ``role``'s password (pinned, or set by :meth:`ensure_database`)."""
        return _read_secret(self._role_password_file(role)) is not None

    def _role_password_file(self, role: str) -> Path:
        return self.root / "roles" / f"{role}.password"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Endpoint:
        """Initialise on first use, then start the server; no-op if it already runs."""
        with self._locked():
            endpoint = self._running_endpoint()
            if endpoint is not None:
                return endpoint
            user = _ServerUser.detect()
            if not (self.data_dir / "PG_VERSION").is_file():
                self._initdb(user)
            self._clear_stale_pidfile()
            bindir = self._bin()
            previous = _read_int(self.root / "port")
            port = previous if previous and not processes.port_in_use(previous) else processes.free_port()
            if previous and port != previous:
                self._progress(f"postgres: port {previous} is taken; using {port}")
            for attempt in range(3):
                self._write_settings(user, port)
                offset = self.log_file.stat().st_size if self.log_file.exists() else 0
                argv: list[str | Path] = [
                    bindir / "pg_ctl",
                    "start",
                    "-D",
                    self.data_dir,
                    "-l",
                    self.log_file,
                ]
                argv += ["-w", "-t", str(START_TIMEOUT), "-s"]
                proc = self._as_server(user, argv, timeout=START_TIMEOUT + 30)
                if proc.returncode == 0:
                    break
                log = _read_from(self.log_file, offset)
                if attempt < 2 and ("could not bind" in log or "Address already in use" in log):
                    port = processes.free_port()
                    continue
                detail = _problem(log) or _last_line(proc.stderr) or f"pg_ctl exited {proc.returncode}"
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
            user = _ServerUser.detect()
            pg_ctl = self._bin() / "pg_ctl"
            for mode in ("fast", "immediate"):
                proc = self._as_server(
                    user,
                    [pg_ctl, "stop", "-D", self.data_dir, "-m", mode, "-w", "-t", "60", "-s"],
                    timeout=90,
                )
                if proc.returncode == 0 or self._running_pid() is None:
                    return
            raise FleetError(
                f"local PostgreSQL did not stop: {_last_line(proc.stderr)} (log: {self.log_file})"
            )

    def status(self) -> PostgresStatus:
        if not (self.data_dir / "PG_VERSION").is_file():
            return PostgresStatus("Absent", None, None, f"not initialised (no {self.data_dir})")
        pid = self._running_pid()
        endpoint = self._running_endpoint()
        if pid is not None and endpoint is not None:
            return PostgresStatus("Running", endpoint, pid, f"pid {pid}, data {self.data_dir}")
        stale = _read_int(self.data_dir / "postmaster.pid")
        detail = f"stale postmaster.pid (pid {stale} is not this server); start recovers it" if stale else ""
        return PostgresStatus("Stopped", None, None, detail)

    def destroy(self) -> None:
        """Stop the server and delete its data, passwords and logs. Irrecoverable."""
        self.stop()
        data = self.data_dir
        if self.data_link.is_symlink():
            shutil.rmtree(data.parent, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases ---------------------------------------------------------------------------

    def ensure_database(
        self, role: str, dbname: str, *, rotate: bool = False, comment: str | None = None
    ) -> str:
        """Make login role ``role`` and database ``dbname`` owned by it exist; return the role's password.

        Only ``role`` (and superusers) may connect to ``dbname``. Repeating the call returns the
        same password (re-asserting it on the role). A role that exists without a password
        fleetflow knows is an error unless ``rotate`` asks for a new one. ``comment``, when
        given, is set on the database (see :meth:`database_comments`).
        """
        validate_name("role", role)
        validate_name("database", dbname)
        with self._role_locked(role), self._admin() as conn:
            stored = _read_secret(self._role_password_file(role))
            exists = self._role_exists(conn, role)
            if exists and stored is None and not rotate:
                raise FleetError(
                    f"role {role} exists but fleetflow does not know its password; ensure it with rotate=True"
                )
            password = stored if stored is not None and not rotate else secrets.token_urlsafe(24)
            _write_secret(self._role_password_file(role), password)
            # libpq computes the SCRAM verifier: the server (and its log) never sees the password.
            verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
            r, d = sql.Identifier(role), sql.Identifier(dbname)
            verb = sql.SQL("ALTER" if exists else "CREATE")
            _execute(
                conn,
                sql.SQL("{} ROLE {} " + _ROLE_ATTRIBUTES + " PASSWORD {}").format(
                    verb, r, sql.Literal(verifier.decode("ascii"))
                ),
                hidden=(password,),
            )
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
            if found is None:  # CREATE DATABASE cannot share a transaction with other statements
                _execute(conn, sql.SQL("CREATE DATABASE {} OWNER {}").format(d, r))
            statements = [
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(d, r),
                sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(d),
                sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(d, r),
            ]
            if comment is not None:
                statements.append(sql.SQL("COMMENT ON DATABASE {} IS {}").format(d, sql.Literal(comment)))
            _execute(conn, sql.SQL("; ").join(statements))
            return password

    def drop_database(self, role: str, dbname: str) -> None:
        """Drop ``dbname`` (disconnecting its sessions), then ``role`` unless it owns another database."""
        validate_name("role", role)
        validate_name("database", dbname)
        with self._role_locked(role), self._admin() as conn:
            _execute(conn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            owns = conn.execute(
                "SELECT 1 FROM pg_database d JOIN pg_roles r ON d.datdba = r.oid WHERE r.rolname = %s",
                (role,),
            ).fetchone()
            if owns is None:
                _execute(conn, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
                self._role_password_file(role).unlink(missing_ok=True)

    def database_comments(self) -> dict[str, str]:
        """The comment of every database that has one, by database name."""
        with self._admin() as conn:
            rows = conn.execute(
                "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
                "WHERE shobj_description(oid, 'pg_database') IS NOT NULL"
            ).fetchall()
        return {str(name): str(comment) for name, comment in rows}

    def close(self) -> None:
        """Close the reused admin connections (they reopen on demand)."""
        with self._guard:
            idle = self._idle[:]
            self._idle.clear()
        _close_all(idle)

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _role_exists(conn: psycopg.Connection[Any], role: str) -> bool:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None

    def _harden(self) -> None:
        """PUBLIC may connect to no database and use no ``public`` schema (new databases copy template1)."""
        with self._admin() as conn:
            _execute(conn, sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE postgres, template1 FROM PUBLIC"))
        with contextlib.closing(self._connect("template1")) as conn:
            _execute(conn, sql.SQL("REVOKE ALL ON SCHEMA public FROM PUBLIC"))

    @contextlib.contextmanager
    def _role_locked(self, role: str) -> Iterator[None]:
        """One change at a time per role in this process; different roles proceed in parallel."""
        with self._guard:
            lock = self._role_locks.setdefault(role, threading.Lock())
        with lock:
            yield

    @contextlib.contextmanager
    def _admin(self) -> Iterator[psycopg.Connection[Any]]:
        """A superuser connection to database ``postgres`` (autocommit), reused across calls."""
        with self._guard:
            conn = self._idle.pop() if self._idle else None
        if conn is not None and (conn.closed or conn.broken or not _alive(conn)):
            conn.close()
            conn = None
        conn = conn or self._connect("postgres")
        try:
            yield conn
        except psycopg.Error as exc:  # a query that _execute did not wrap: no statement text, no secret
            conn.close()
            raise FleetError(f"local PostgreSQL: {_message(exc, ())}") from None
        except BaseException:
            conn.close()  # whatever went wrong, the next call starts on a fresh connection
            raise
        with self._guard:
            if len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(conn)
                conn = None
        if conn is not None:
            conn.close()

    def _connect(self, dbname: str) -> psycopg.Connection[Any]:
        endpoint = self._running_endpoint()
        if endpoint is None:
            raise FleetError(f"local PostgreSQL is not running (data {self.data_dir}); start it first")
        password = _read_secret(self.password_file)
        if password is None:
            raise FleetError(f"the superuser password file {self.password_file} is missing")
        where = f"{endpoint.host}:{endpoint.port}"
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
            raise FleetError(
                f"cannot connect to local PostgreSQL at {where}: {_message(exc, (password,))}"
            ) from None

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
            self._bindir = find_bindir(version=version)
        return self._bindir

    def _initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def _initdb(self, user: _ServerUser) -> None:
        if self.data_link.is_symlink() and not self.data_dir.exists():
            raise FleetError(
                f"the data directory {self.data_dir} (linked from {self.data_link}) is missing; "
                f"remove {self.data_link} to start with an empty server"
            )
        bindir = self._bin()
        cluster_dir = self._place_data_dir(user)
        data = self.data_dir
        data.mkdir(mode=0o700, exist_ok=True)
        user.give(data)
        password = secrets.token_urlsafe(24)
        _write_secret(self.password_file, password)
        pwfile = cluster_dir / ".initdb-password"
        pwfile.unlink(missing_ok=True)
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(password + "\n")
            user.give(pwfile)
            argv: list[str | Path] = [bindir / "initdb", "-D", data, "-U", SUPERUSER, f"--pwfile={pwfile}"]
            argv += ["--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--no-locale", "-E", "UTF8"]
            argv += ["--no-instructions"]
            proc = self._as_server(user, argv, timeout=300)
        finally:
            pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise FleetError(f"initdb failed for {data}: {_last_line(proc.stderr) or proc.returncode}")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# fleetflow rewrites this file before every start\ninclude_if_exists = 'fleetflow.conf'\n"
            )
        self._progress(f"postgres: initialised PostgreSQL {bindir.parent.name} in {data}")

    def _place_data_dir(self, user: _ServerUser) -> Path:
        """The directory that holds data, sockets and the log: ``root``, or one the server user can reach."""
        if not user.foreign:
            return self.root
        os.chmod(self.root, 0o755)  # noqa: S103 - the server user must traverse it; secrets inside are 0600
        if user.can_traverse(self.root):
            return self.root
        if self.data_link.is_dir() and not self.data_link.is_symlink():
            try:
                self.data_link.rmdir()
            except OSError:
                raise FleetError(
                    f"the {SERVER_USER!r} user cannot reach {self.data_link}, which is not empty"
                ) from None
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        cluster_dir = user.home / "fleetflow" / digest
        for directory in (cluster_dir.parent, cluster_dir):
            directory.mkdir(mode=0o700, exist_ok=True)
            user.give(directory)
        if not user.can_traverse(cluster_dir):
            raise FleetError(
                f"neither {self.root} nor {cluster_dir} is reachable for the {SERVER_USER!r} user"
            )
        self.data_link.unlink(missing_ok=True)
        self.data_link.symlink_to(cluster_dir / "data")
        self._progress(
            f"postgres: the {SERVER_USER!r} user cannot reach {self.root}; data lives in {cluster_dir}"
        )
        return cluster_dir

    def _write_settings(self, user: _ServerUser, port: int) -> None:
        socket_dir = self.socket_dir
        socket_dir.mkdir(mode=0o755, exist_ok=True)
        user.give(socket_dir)
        # A socket path longer than sun_path allows would stop the server: then TCP only.
        too_long = len(str(socket_dir / f".s.PGSQL.{port}")) > _SOCKET_PATH_MAX
        sockets = "" if too_long else str(socket_dir)
        settings = {
            "listen_addresses": HOST,
            "port": str(port),
            "unix_socket_directories": sockets,
            "password_encryption": "scram-sha-256",
            "log_min_error_statement": "panic",  # failing statements are not copied into the log
        }
        path = self.data_dir / "fleetflow.conf"
        path.write_text("".join(f"{key} = {_conf_value(value)}\n" for key, value in settings.items()))
        os.chmod(path, 0o600)
        user.give(path)
        if not self.log_file.exists():
            self.log_file.touch(mode=0o600)
        user.give(self.log_file)

    def _running_pid(self) -> int | None:
        """The postmaster's pid if ``postmaster.pid`` names a live PostgreSQL serving our data directory."""
        pid = _read_int(self.data_dir / "postmaster.pid")
        if not pid:
            return None
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            cwd = os.readlink(f"/proc/{pid}/cwd")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            return None
        if state == "Z" or Path(exe).name != "postgres":
            return None
        return pid if Path(cwd) == self.data_dir.resolve() else None

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
        stale = _read_int(pidfile)
        if stale is None or self._running_pid() is not None:
            return
        pidfile.unlink(missing_ok=True)
        if self.socket_dir.is_dir():
            for leftover in self.socket_dir.glob(".s.PGSQL.*"):
                leftover.unlink(missing_ok=True)
        self._progress(f"postgres: removed a stale postmaster.pid (pid {stale} is not this server)")

    def _as_server(
        self, user: _ServerUser, argv: Sequence[str | Path], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """Run one of the server's programs as the server user, detached from our session."""
        env = {"PATH": "/usr/bin:/bin", "HOME": str(user.home), "LC_ALL": "C"}
        try:
            return subprocess.run(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=env,
                cwd=self.data_dir.parent,
                timeout=timeout,
                start_new_session=True,
                check=False,
                user=user.uid if user.foreign else None,
                group=user.gid if user.foreign else None,
                extra_groups=list(user.groups) if user.foreign else None,
            )
        except subprocess.TimeoutExpired:
            raise FleetError(f"{Path(argv[0]).name} did not finish within {timeout:.0f} s") from None


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
    """Run ``sql`` (from stdin) with psql over TCP; the password travels only in ``PGPASSWORD``.

    Raises FleetError with psql's error line, with ``password`` and ``secrets_`` redacted.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=password, PGCONNECT_TIMEOUT="10", PGSSLMODE="disable", PGAPPNAME="fleetflow")
    argv = [str(psql), "-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"]
    argv += ["-h", endpoint.host, "-p", str(endpoint.port), "-U", user, "-d", dbname, "-f", "-"]
    try:
        proc = subprocess.run(
            argv, input=sql, capture_output=True, text=True, env=env, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        raise FleetError(f"psql as {user} on {dbname} at {endpoint.host}:{endpoint.port} timed out") from None
    if proc.returncode != 0:
        line = _error_line(proc.stderr) or f"psql exited {proc.returncode}"
        for secret in (password, *secrets_):
            if secret:
                line = line.replace(secret, "***")
        raise FleetError(f"psql as {user} on {dbname} at {endpoint.host}:{endpoint.port} failed: {line}")
    return proc.stdout.strip()


def _execute(
    conn: psycopg.Connection[Any], statement: sql.SQL | sql.Composed, hidden: Sequence[str] = ()
) -> None:
    """Run ``statement``; a failure is a FleetError with the server's message (never the statement)."""
    try:
        conn.execute(statement)
    except psycopg.Error as exc:
        raise FleetError(f"local PostgreSQL: {_message(exc, hidden)}") from None


def _message(exc: psycopg.Error, hidden: Sequence[str]) -> str:
    """The server's (or libpq's) one-line message, with ``hidden`` redacted."""
    diag = getattr(exc, "diag", None)
    text = (diag.message_primary if diag is not None else None) or str(exc)
    text = " ".join(text.split())
    for secret in hidden:
        if secret:
            text = text.replace(secret, "***")
    return text


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


def _error_line(stderr: str) -> str:
    """psql's first error line, without the statement excerpt (``LINE n:``) it may add."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in lines:
        if any(tag in line for tag in ("ERROR:", "FATAL:", "error:")):
            return " ".join(line.split())
    return " ".join(lines[0].split()) if lines and not lines[0].startswith("LINE ") else ""


def _problem(log: str) -> str:
    """The server log's first FATAL or PANIC line (why it stopped), else its last line."""
    for line in log.splitlines():
        for tag in ("FATAL:", "PANIC:"):
            if tag in line:
                return " ".join(line[line.index(tag) :].split())
    return _last_line(log)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[-1].split()) if lines else ""


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def _read_int(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def _read_secret(path: Path) -> str | None:
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    return value or None


def _write_secret(path: Path, value: str) -> None:
    """Write ``value`` owner-only, atomically (a reader sees the old or the new secret, never half)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(value + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
