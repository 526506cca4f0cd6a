"""The CNPG stand-in's pure parts: role/database naming and the work queue."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fleetflow_dev.cnpg.contract import sql_name
from fleetflow_dev.cnpg.databases import comment, parse_comment, servers
from fleetflow_dev.cnpg.workqueue import WorkQueue

from fleetflow.supervisor.pgroles import validate_name


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("workload-cluster", "cluster-workload-cluster"),
        ("a-b", "c"),
        ("a", "b-c"),
        ("0ns", "x.y"),
        ("pg-system", "postgres"),
        ("n" * 63, "c" * 253),
    ],
)
def test_sql_name_is_a_valid_deterministic_identifier(namespace: str, name: str) -> None:
    role = sql_name(namespace, name)
    assert validate_name("role", role) == validate_name("database", role)
    assert len(role.encode()) <= 63
    assert role == sql_name(namespace, name)


def test_sql_name_tells_clusters_apart() -> None:
    assert sql_name("a-b", "c") != sql_name("a", "b-c")
    assert sql_name("x" * 60, "one") != sql_name("x" * 60, "two")  # differ only past the readable part
    assert sql_name("team", "db").startswith("c_team_db_")


def test_ownership_comment_round_trips() -> None:
    owner = parse_comment(comment("ns", "cluster-1", "0a1b-2c"))
    assert owner is not None
    assert (owner.namespace, owner.name, owner.uid) == ("ns", "cluster-1", "0a1b-2c")
    assert parse_comment("made by somebody else") is None


def test_queue_merges_a_waiting_key_and_keeps_force() -> None:
    queue: WorkQueue[str] = WorkQueue()
    stop = threading.Event()
    queue.add("a", force=True)
    queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert queue.get(stop) == ("a", True)
    assert queue.get(stop) == ("b", False)


def test_queue_holds_back_a_key_while_it_is_worked_on() -> None:
    queue: WorkQueue[str] = WorkQueue()
    stop = threading.Event()
    queue.add("a")
    assert queue.get(stop) == ("a", False)
    queue.add("a")  # changed while a worker has it
    queue.add("b")
    assert queue.get(stop) == ("b", False)  # "a" waits for done()
    queue.done("b")
    queue.done("a")
    assert queue.get(stop) == ("a", False)


def test_queue_delays_a_retry_without_holding_up_others() -> None:
    queue: WorkQueue[str] = WorkQueue()
    stop = threading.Event()
    queue.add("later", delay=60)
    queue.add("now")
    assert queue.get(stop) == ("now", False)
    queue.add("later")  # an event makes it due at once
    assert queue.get(stop) == ("later", False)


def test_queue_get_returns_none_once_stopped() -> None:
    queue: WorkQueue[str] = WorkQueue()
    stop = threading.Event()
    queue.add("later", delay=60)
    stop.set()
    assert queue.get(stop, poll=0.01) is None


def test_servers_finds_one_per_service_cluster(tmp_path: Path) -> None:
    (tmp_path / "svc-a" / "data").mkdir(parents=True)
    (tmp_path / "svc-b" / "ns" / "not-a-server").mkdir(parents=True)
    (tmp_path / "not-a-dir").write_text("")
    assert [s.root for s in servers(tmp_path)] == [tmp_path / "svc-a"]
