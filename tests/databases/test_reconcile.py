"""reconcile's per-cluster repair, without Prefect or Kubernetes: the steps are replaced by fakes
and ``repair_cluster`` is called as the plain function its task wraps.

What it proves: every row of the policy table has a step; a cluster runs exactly the steps the
table wants, in table order; a failing step fails that cluster with what was repaired before it;
no step starts after the cluster's deadline; and the rows, log lines and final message say so.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fleetflow import policy
from fleetflow.flows import reconcile as r

SETTINGS = r.Settings("chart", None, None, 1, "Retain", None)


def test_every_row_of_the_policy_table_has_a_step() -> None:
    assert set(r.STEPS) == {rule.action for rule in policy.RULES}


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fake steps: each records that it ran and repairs nothing."""
    calls: list[str] = []
    for action in r.STEPS:
        monkeypatch.setitem(r.STEPS, action, lambda n, s, d, a=action: calls.append(a))
    return calls


def fake(monkeypatch: pytest.MonkeyPatch, action: str, step: Callable[[r.Deadline], str | None]) -> None:
    monkeypatch.setitem(r.STEPS, action, lambda name, settings, deadline: step(deadline))


def test_a_cluster_runs_what_the_table_wants_in_table_order(ran: list[str]) -> None:
    labels = {"type": "app", "postgres": "required"}
    result = r.repair_cluster.fn("wl", labels, False, SETTINGS, 60)
    assert ran == ["provision-database", "deploy-app"]
    assert result.repaired == []
    ran.clear()
    r.repair_cluster.fn("wl", {"postgres": "optional"}, True, SETTINGS, 60)
    assert ran == ["deprovision-database", "withdraw-app"]
    ran.clear()
    r.repair_cluster.fn("wl", {"postgres": "optional"}, False, SETTINGS, 60)
    assert ran == [], "no database placed: nothing to deprovision"


def test_a_failing_step_fails_the_cluster_naming_it_and_what_was_repaired(
    ran: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(deadline: r.Deadline) -> str | None:
        raise ConnectionError("connect to 127.0.0.1:1 refused")

    fake(monkeypatch, "provision-database", lambda d: "credentials")
    fake(monkeypatch, "deploy-app", unreachable)
    with pytest.raises(r.ClusterNotRepaired) as info:
        r.repair_cluster.fn("wl", {"type": "app", "postgres": "required"}, False, SETTINGS, 60)
    assert info.value.action == "deploy-app"
    assert info.value.repaired == ["credentials"]
    assert info.value.cause == "ConnectionError: connect to 127.0.0.1:1 refused"
    assert str(info.value) == "wl: deploy-app: ConnectionError: connect to 127.0.0.1:1 refused"


def test_no_step_starts_after_the_deadline(ran: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(deadline: r.Deadline) -> str | None:
        deadline.start -= 100  # as if this step had taken 100 s
        return "credentials"

    fake(monkeypatch, "provision-database", slow)
    with pytest.raises(r.ClusterNotRepaired) as info:
        r.repair_cluster.fn("wl", {"type": "app", "postgres": "required"}, False, SETTINGS, 30)
    assert info.value.action == "deploy-app"
    assert info.value.cause == "deadline of 30s passed before deploy-app"
    assert info.value.repaired == ["credentials"]
    assert ran == [], "deploy-app must not have started"


def test_the_wait_is_given_what_remains_of_the_deadline() -> None:
    deadline = r.Deadline(30)
    deadline.start -= 20
    assert 9 < deadline.left("applying the database") <= 10
    deadline.start -= 10
    with pytest.raises(r.DeadlineExceeded, match="deadline of 30s passed before applying the database"):
        deadline.left("applying the database")


def test_rows_lines_summary_and_failure_message() -> None:
    failure = r.ClusterNotRepaired("dead", "deploy-app", [], 7.25, "TemporaryError: refused")
    rows = [
        r.row_of("ok", ["install-operator"], r.Repaired([], 0.31), None),
        r.row_of("fixed", ["provision-database", "deploy-app"], r.Repaired(["credentials", "app"], 2), None),
        r.row_of("dead", ["deploy-app"], failure, "Task run encountered an exception"),
        r.row_of("crashed", [], RuntimeError("worker died"), "Crashed: worker died"),
    ]
    assert [row.outcome for row in rows] == ["unchanged", "repaired", "failed", "failed"]
    assert [row.line() for row in rows] == [
        "ok: unchanged (install-operator) in 0.3s",
        "fixed: repaired credentials, app (provision-database, deploy-app) in 2.0s",
        "dead: FAILED (deploy-app) in 7.2s: deploy-app: TemporaryError: refused",
        "crashed: FAILED (nothing wanted) in 0.0s: Crashed: worker died",
    ]
    assert rows[1].table() == {
        "cluster": "fixed",
        "outcome": "repaired",
        "wanted": "provision-database, deploy-app",
        "repaired": "credentials, app",
        "seconds": "2.0",
        "detail": "",
    }
    assert r.summary(rows) == {
        "operator": [],
        "credentials": ["fixed"],
        "app": ["fixed"],
        "released": [],
        "request": [],
        "failed": ["dead", "crashed"],
    }
    assert r.failure_message(rows) == (
        "2 of 4 clusters not repaired (the others were): dead (deploy-app: TemporaryError: refused); "
        "crashed (Crashed: worker died); see the artifact reconcile-outcome"
    )


def test_a_healthy_fleet_summarises_to_nothing() -> None:
    rows = [r.row_of("ok", ["install-operator"], r.Repaired([], 0.1), None)]
    assert not any(r.summary(rows).values())
