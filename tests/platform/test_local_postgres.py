"""A real PostgreSQL server from Debian's packages: lifecycle (supervisor.postgres), idempotent
databases and credentials (supervisor.pgroles).

Tests that need the server are marked ``integration``; name validation and binary lookup are not.
"""

from __future__ import annotations

import socket
import stat
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fleetflow.errors import BootstrapError, FleetError, UsageError
from fleetflow.supervisor import pgroles, postgres
from fleetflow.supervisor.pgroles import run_psql
from fleetflow.supervisor.pgsystem import find_bindir
from fleetflow.supervisor.postgres import Endpoint, LocalPostgres
from tests.support.eventually import eventually


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _sql(endpoint: Endpoint, sql: str, user: str, password: str, dbname: str) -> str:
    return run_psql(find_bindir() / "psql", endpoint, sql, user=user, password=password, dbname=dbname)


@pytest.fixture
def server() -> Iterator[LocalPostgres]:
    """A server of its own under this test's FLEETFLOW_HOME; destroyed afterwards."""
    pg = LocalPostgres(postgres.default_root())
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalPostgres, Endpoint]]:
    """One started server shared by the database tests of this module."""
    pg = LocalPostgres(tmp_path_factory.mktemp("postgres") / "pg")
    try:
        yield pg, pg.start()
    finally:
        pg.destroy()


@pytest.mark.integration
def test_start_is_idempotent_and_stop_stops(server: LocalPostgres) -> None:
    messages: list[str] = []
    server = LocalPostgres(server.root, progress=messages.append)
    assert server.status().state == "Absent"

    endpoint = server.start()
    assert endpoint.host == "127.0.0.1"
    status = server.status()
    assert status.state == "Running"
    assert status.endpoint == endpoint
    assert any("initialised PostgreSQL" in m for m in messages)

    assert server.start() == endpoint
    assert server.status().pid == status.pid

    password_file = server.root / "superuser-password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    superuser = password_file.read_text().strip()
    assert _sql(endpoint, "SHOW listen_addresses", "postgres", superuser, "postgres") == "127.0.0.1"
    assert (server.root / "port").read_text().strip() == str(endpoint.port)

    server.stop()
    assert server.status().state == "Stopped"
    eventually(lambda: not _accepts(endpoint.port), f"port {endpoint.port} to stop accepting connections", 15)
    server.stop()  # no-op

    assert server.start().port == endpoint.port  # the previous port, still free
    server.stop()


@pytest.mark.integration
def test_stale_pidfile_is_recovered(server: LocalPostgres) -> None:
    server.start()
    server.stop()
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile = server.data_dir / "postmaster.pid"
    pidfile.write_text(f"{dead.pid}\n{server.data_dir}\n0\n5432\n\n127.0.0.1\n0 0\nready   \n")

    status = server.status()
    assert status.state == "Stopped"
    assert "stale postmaster.pid" in status.detail

    endpoint = server.start()
    assert server.status().state == "Running"
    superuser = (server.root / "superuser-password").read_text().strip()
    assert _sql(endpoint, "SELECT 1", "postgres", superuser, "postgres") == "1"


@pytest.mark.integration
def test_a_taken_port_is_replaced_and_reported(server: LocalPostgres) -> None:
    messages: list[str] = []
    server = LocalPostgres(server.root, progress=messages.append)
    first = server.start()
    server.stop()
    eventually(lambda: not _accepts(first.port), f"port {first.port} to stop accepting connections", 15)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", first.port))
        squatter.listen()
        second = server.start()
    assert second.port != first.port
    assert f"postgres: port {first.port} is taken; using {second.port}" in messages
    assert (server.root / "port").read_text().strip() == str(second.port)


@pytest.mark.integration
def test_ensure_database_is_idempotent_and_usable(running: tuple[LocalPostgres, Endpoint]) -> None:
    pg, endpoint = running
    password = pgroles.ensure_database(pg, "todo_app", "todo")
    assert pgroles.ensure_database(pg, "todo_app", "todo") == password

    out = _sql(endpoint, "CREATE TABLE todo (id bigint primary key); SELECT 1;", "todo_app", password, "todo")
    assert out == "1"
    assert _sql(endpoint, "SELECT count(*) FROM todo", "todo_app", password, "todo") == "0"

    stored = pg.root / "roles" / "todo_app.password"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert password not in pg.log_file.read_text()

    with pytest.raises(FleetError, match="password authentication failed") as info:
        _sql(endpoint, "SELECT 1", "todo_app", "not-the-password", "todo")
    assert "not-the-password" not in str(info.value)

    pgroles.drop_database(pg, "todo_app", "todo")
    with pytest.raises(FleetError, match="password authentication failed"):
        _sql(endpoint, "SELECT 1", "todo_app", password, "todo")
    superuser = (pg.root / "superuser-password").read_text().strip()
    assert (
        _sql(
            endpoint,
            "SELECT count(*) FROM pg_database WHERE datname = 'todo'",
            "postgres",
            superuser,
            "postgres",
        )
        == "0"
    )
    assert not stored.exists()
    pgroles.drop_database(pg, "todo_app", "todo")  # idempotent


@pytest.mark.integration
def test_rotate_sets_a_new_password(running: tuple[LocalPostgres, Endpoint]) -> None:
    pg, endpoint = running
    old = pgroles.ensure_database(pg, "rot", "rotdb")
    new = pgroles.ensure_database(pg, "rot", "rotdb", rotate=True)
    assert new != old
    assert _sql(endpoint, "SELECT current_user", "rot", new, "rotdb") == "rot"
    with pytest.raises(FleetError, match="password authentication failed"):
        _sql(endpoint, "SELECT 1", "rot", old, "rotdb")
    assert pgroles.ensure_database(pg, "rot", "rotdb") == new
    pgroles.drop_database(pg, "rot", "rotdb")


@pytest.mark.integration
def test_role_with_unknown_password_needs_rotate(running: tuple[LocalPostgres, Endpoint]) -> None:
    pg, endpoint = running
    pgroles.ensure_database(pg, "lost", "lostdb")
    (pg.root / "roles" / "lost.password").unlink()
    with pytest.raises(FleetError, match="rotate=True"):
        pgroles.ensure_database(pg, "lost", "lostdb")
    password = pgroles.ensure_database(pg, "lost", "lostdb", rotate=True)
    assert _sql(endpoint, "SELECT 1", "lost", password, "lostdb") == "1"
    pgroles.drop_database(pg, "lost", "lostdb")


@pytest.mark.integration
def test_databases_are_private_to_their_owner(running: tuple[LocalPostgres, Endpoint]) -> None:
    pg, endpoint = running
    a = pgroles.ensure_database(pg, "tenant_a", "db_a")
    b = pgroles.ensure_database(pg, "tenant_b", "db_b")
    for dbname in ("db_b", "postgres", "template1"):
        with pytest.raises(FleetError, match="permission denied for database"):
            _sql(endpoint, "SELECT 1", "tenant_a", a, dbname)
    # Inside its own database the owner has the public schema; nobody else was granted anything there.
    _sql(endpoint, "CREATE TABLE mine (x int)", "tenant_b", b, "db_b")
    acl = _sql(
        endpoint, "SELECT nspacl::text FROM pg_namespace WHERE nspname = 'public'", "tenant_b", b, "db_b"
    )
    assert "=U" not in acl.replace("pg_database_owner=U", "")  # no "=U/..." entry, i.e. none for PUBLIC
    privileges = _sql(
        endpoint,
        "SELECT has_database_privilege('tenant_a', 'db_b', 'CONNECT'),"
        " has_schema_privilege('tenant_a', 'public', 'USAGE'),"
        " has_schema_privilege('tenant_b', 'public', 'CREATE')",
        "tenant_b",
        b,
        "db_b",
    )
    assert privileges == "f|f|t"
    pgroles.drop_database(pg, "tenant_a", "db_a")
    pgroles.drop_database(pg, "tenant_b", "db_b")


@pytest.mark.integration
def test_database_comments_and_parallel_databases(running: tuple[LocalPostgres, Endpoint]) -> None:
    """Several threads may ensure different databases at once on one server (reused connections)."""
    pg, endpoint = running
    names = [f"par_{i}" for i in range(6)]
    with ThreadPoolExecutor(4) as pool:
        passwords = list(
            pool.map(lambda n: pgroles.ensure_database(pg, n, n, comment=f"made for {n}"), names)
        )
    assert len(set(passwords)) == len(names)
    comments = pgroles.database_comments(pg)
    for name, password in zip(names, passwords, strict=True):
        assert comments[name] == f"made for {name}"
        assert _sql(endpoint, "SELECT current_database()", name, password, name) == name
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: pgroles.drop_database(pg, n, n), names))
    assert not set(names) & set(pgroles.database_comments(pg))


@pytest.mark.integration
def test_no_password_reaches_the_server_log(running: tuple[LocalPostgres, Endpoint]) -> None:
    """Roles get a verifier computed by libpq; a failing role statement does not echo it either."""
    pg, _ = running
    password = pgroles.ensure_database(pg, "quiet", "quietdb")
    pgroles.pin_password(pg, "quiet", "a-pinned-secret")
    assert pgroles.ensure_database(pg, "quiet", "quietdb") == "a-pinned-secret"
    log = pg.log_file.read_text()
    assert password not in log
    assert "a-pinned-secret" not in log
    pgroles.drop_database(pg, "quiet", "quietdb")


def test_database_calls_need_a_running_server(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="not running"):
        pgroles.ensure_database(LocalPostgres(tmp_path / "pg"), "app", "app")


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("role", "App"),
        ("role", "a-b"),
        ("role", 'x"; DROP ROLE postgres; --'),
        ("role", "1abc"),
        ("role", "a" * 64),
        ("role", "pg_monitor"),
        ("role", "postgres"),
        ("database", "template1"),
        ("database", ""),
    ],
)
def test_names_are_validated(tmp_path: Path, kind: str, name: str) -> None:
    pg = LocalPostgres(tmp_path / "pg")
    role, dbname = (name, "ok") if kind == "role" else ("ok", name)
    with pytest.raises(UsageError, match=f"invalid {kind} name"):
        pgroles.ensure_database(pg, role, dbname)
    with pytest.raises(UsageError, match=f"invalid {kind} name"):
        pgroles.drop_database(pg, role, dbname)


def test_missing_binaries_say_how_to_install(tmp_path: Path) -> None:
    (tmp_path / "15" / "bin").mkdir(parents=True)
    with pytest.raises(BootstrapError, match="apt-get install postgresql"):
        find_bindir(tmp_path)


def test_newest_version_wins(tmp_path: Path) -> None:
    for version in ("9.6", "15", "16", "notaversion"):
        bindir = tmp_path / version / "bin"
        bindir.mkdir(parents=True)
        for tool in ("initdb", "pg_ctl", "postgres", "psql"):
            (bindir / tool).touch()
    assert find_bindir(tmp_path) == tmp_path / "16" / "bin"
    assert find_bindir(tmp_path, version="15") == tmp_path / "15" / "bin"


def test_unsafe_root_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="characters"):
        LocalPostgres(tmp_path / 'a"$b')
