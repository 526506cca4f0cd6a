"""executor.plan: which runs to claim, which wait, which are superseded (pure logic)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from fleetflow.executor.plan import CRASHED, PENDING, RUNNING, SCHEDULED, Redo, Run, plan, redo_lost

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
DEPLOYMENT, OTHER = uuid.uuid4(), uuid.uuid4()


def run(
    second: int,
    state: str = SCHEDULED,
    cluster: str = "a",
    deployment: uuid.UUID = DEPLOYMENT,
    start: int = 0,
) -> Run:
    return Run(
        id=uuid.uuid4(),
        name=f"run-{second}",
        deployment_id=deployment,
        parameters={"cluster": cluster},
        state=state,
        created=NOW + timedelta(seconds=second - 100),
        expected_start=NOW + timedelta(seconds=start),
    )


def test_the_oldest_due_run_of_each_key_is_claimed_up_to_the_free_slots() -> None:
    runs = [run(3, cluster="b"), run(1, cluster="a"), run(2, cluster="c", deployment=OTHER)]
    assert [r.name for r in plan(runs, NOW, 8).claim] == ["run-1", "run-2", "run-3"]
    assert [r.name for r in plan(runs, NOW, 2).claim] == ["run-1", "run-2"]
    assert plan(runs, NOW, 0).claim == []


def test_a_burst_for_one_key_keeps_one_to_run_and_one_waiting() -> None:
    burst = [run(i) for i in range(5)]
    decided = plan(burst, NOW, 8)
    assert [r.name for r in decided.claim] == ["run-0"]
    assert [(r.name, by.name) for r, by in decided.supersede] == [
        ("run-2", "run-1"),
        ("run-3", "run-1"),
        ("run-4", "run-1"),
    ]


def test_while_a_run_is_in_flight_the_oldest_waits_and_the_rest_are_superseded() -> None:
    for state in (PENDING, RUNNING):
        decided = plan([run(0, state), run(1), run(2), run(3)], NOW, 8)
        assert decided.claim == []
        assert [(r.name, by.name) for r, by in decided.supersede] == [("run-2", "run-1"), ("run-3", "run-1")]


def test_different_parameters_or_deployments_never_coalesce() -> None:
    runs = [run(0, RUNNING), run(1, cluster="b"), run(2, deployment=OTHER)]
    decided = plan(runs, NOW, 8)
    assert [r.name for r in decided.claim] == ["run-1", "run-2"]
    assert decided.supersede == []


def test_runs_scheduled_for_later_are_left_alone_and_their_time_reported() -> None:
    later, soon = run(0, start=300), run(1, start=60)
    decided = plan([later, soon], NOW, 8)
    assert decided.claim == []
    assert decided.supersede == []
    assert decided.next_due == soon.expected_start


LOST = (CRASHED, True)  # crashed by the automation: its executor's heartbeats stopped


def test_a_run_crashed_for_lost_heartbeats_is_redone_up_to_the_limit() -> None:
    once = [(SCHEDULED, False), (PENDING, False), (RUNNING, False), LOST]
    assert redo_lost(once) == Redo(again=True, losses=1)
    again = [*once, (SCHEDULED, False), (PENDING, False), (RUNNING, False), LOST]
    assert redo_lost(again, limit=2) == Redo(again=True, losses=2)
    assert redo_lost([*again, (PENDING, False), LOST], limit=2) == Redo(again=False, losses=3)


def test_only_a_run_whose_current_state_is_such_a_crash_is_redone() -> None:
    assert not redo_lost([(RUNNING, False), (CRASHED, False)]).again, "crashed for another reason"
    assert not redo_lost([(RUNNING, False), LOST, (SCHEDULED, False)]).again, "redone already"
    assert not redo_lost([]).again
