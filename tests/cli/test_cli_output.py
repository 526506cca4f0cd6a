"""What the CLI prints: one set of objects as a table, a wide table, JSON or YAML; a missing object
as one line on stderr and exit 1; Prefect's run logs kept off the terminal unless -v."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from fleetflow.cli import cluster, db, runlogs
from fleetflow.cli.main import main
from fleetflow.cli.output import Column, render_list, render_object
from fleetflow.errors import APINotFoundError
from fleetflow.registry import ClusterRecord

COLUMNS: list[Column[dict[str, Any]]] = [
    Column("NAME", lambda o: o["name"]),
    Column("READY", lambda o: o["ready"]),
    Column("LABELS", lambda o: o["labels"]),
    Column("SERVER", lambda o: o["server"], wide=True),
]
OBJECTS = [
    {"name": "shop", "ready": True, "labels": {"type": "app", "a": "b"}, "server": "https://10.0.0.1"},
    {"name": "svc", "ready": None, "labels": {}, "server": ""},
]


def test_a_list_is_a_table_a_wide_table_or_a_kubectl_style_list_object() -> None:
    shown = render_list(OBJECTS, "table", COLUMNS, dict, "none")
    assert shown.splitlines() == [
        "NAME   READY   LABELS",
        "shop   true    a=b,type=app",
        "svc            <none>",
    ]
    assert render_list(OBJECTS, "wide", COLUMNS, dict, "none").splitlines()[0].split() == [
        "NAME",
        "READY",
        "LABELS",
        "SERVER",
    ]
    for output, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        assert load(render_list(OBJECTS, output, COLUMNS, dict, "none")) == {"kind": "List", "items": OBJECTS}
        assert load(render_list([], output, COLUMNS, dict, "none")) == {"kind": "List", "items": []}
    assert render_list([], "table", COLUMNS, dict, "No clusters registered.") == "No clusters registered."


def test_one_object_is_aligned_fields_or_itself() -> None:
    fields = [("Request", "c/n/x"), ("Deletion policy", "Retain"), ("Message", "")]
    assert render_object({}, "table", fields).splitlines() == [
        "Request:         c/n/x",
        "Deletion policy: Retain",
        "Message:",
    ]
    assert json.loads(render_object(OBJECTS[0], "json", fields)) == OBJECTS[0]


def test_a_cluster_object_has_what_a_script_reads_and_no_credentials() -> None:
    record = ClusterRecord(
        "shop", {"type": "app"}, ready=False, version="v1.31.0", reason="Unreachable", message="refused"
    )
    obj = cluster.cluster_object(record, "https://10.0.0.1:6443")
    assert obj["name"] == obj["namespace"] == "shop"
    assert (obj["labels"], obj["ready"], obj["server"]) == ({"type": "app"}, False, "https://10.0.0.1:6443")
    assert obj["conditions"] == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Unreachable",
            "message": "refused",
            "lastProbeTime": "",
        }
    ]
    assert cluster.cluster_object(ClusterRecord("new"), "")["conditions"][0]["status"] == "Unknown"


def test_a_database_object_names_its_secret_and_never_holds_one() -> None:
    live = {
        "metadata": {"name": "orders", "namespace": "shop", "generation": 1},
        "spec": {"database": "orders", "instances": 2, "deletionPolicy": "Delete"},
        "status": {
            "phase": "Ready",
            "serviceCluster": "service-cluster",
            "secretName": "orders-credentials",
            "endpoint": {"host": "10.0.0.9", "port": 5432},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "ready"}],
        },
    }
    obj = db.database_object("workload-cluster", live)
    assert {k: obj[k] for k in ("cluster", "namespace", "name", "phase", "ready", "serviceCluster")} == {
        "cluster": "workload-cluster",
        "namespace": "shop",
        "name": "orders",
        "phase": "Ready",
        "ready": True,
        "serviceCluster": "service-cluster",
    }
    assert (obj["secretName"], obj["endpoint"], obj["instances"]) == (
        "orders-credentials",
        {"host": "10.0.0.9", "port": 5432},
        2,
    )
    assert (obj["storage"], obj["deletionPolicy"]) == ("1Gi", "Delete")


class _Registry:
    """A registry with no clusters registered and no Database objects."""

    def require(self, name: str) -> ClusterRecord:
        raise APINotFoundError(f"cluster {name!r} is not registered", status=404)

    def list(self) -> list[ClusterRecord]:
        return []


@pytest.fixture
def empty(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (cluster, db):
        monkeypatch.setattr(module, "connect", lambda *a, **k: _Registry())
    monkeypatch.setattr(db.store, "get", lambda registry, ref: None)
    monkeypatch.setattr(db.store, "delete", lambda registry, ref: False)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["db", "get", "shop/team/orders"], "shop/team/orders"),
        (["db", "delete", "shop/team/orders"], "shop/team/orders"),
        (["cluster", "get", "nowhere"], "'nowhere'"),
        (["cluster", "get", "nowhere", "-o", "json"], "'nowhere'"),
        (["cluster", "label", "nowhere", "a=b"], "'nowhere'"),
        (["cluster", "deregister", "nowhere"], "'nowhere'"),
    ],
)
@pytest.mark.usefixtures("empty")
def test_a_missing_object_is_one_line_on_stderr_and_exit_1(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("error: ")
    assert named in err


@pytest.mark.usefixtures("empty")
def test_an_empty_list_as_json_is_an_empty_list(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["db", "list", "-o", "json"], ["cluster", "list", "-o", "json"]):
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out) == {"kind": "List", "items": []}


@pytest.fixture
def run_loggers() -> Iterator[None]:
    before = {name: logging.getLogger(name).propagate for name in runlogs.RUN_LOGGERS}
    yield
    for name, propagate in before.items():
        logging.getLogger(name).propagate = propagate


@pytest.mark.usefixtures("run_loggers")
def test_run_logs_reach_prefect_but_the_terminal_only_when_verbose() -> None:
    from prefect.logging.handlers import APILogHandler

    runlogs.configure(verbose=False)
    for name in runlogs.RUN_LOGGERS:
        logger = logging.getLogger(name)
        assert logger.propagate is False, f"{name} still reaches the console handler"
        assert any(isinstance(h, APILogHandler) for h in logger.handlers), f"{name} no longer reaches the UI"
    runlogs.configure(verbose=True)
    assert all(logging.getLogger(name).propagate for name in runlogs.RUN_LOGGERS)
