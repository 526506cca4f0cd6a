"""How long a task keeps retrying transient failures before its run fails.

Ordinary API tasks give up after about 7 s (1, 2 and 4 s apart): a cluster that cannot be reached
is reported soon. apply-database, part of a run that waits minutes for a database anyway, must
outlast a restarting API server (up to 12 s on the local fleet under load; the fault test
``test_fault_apiserver`` needed 5 attempts across an outage of 19 s).
"""

from __future__ import annotations

from fleetflow.tasks.database import apply_database, place_database


def test_apply_database_retries_through_an_api_server_restart() -> None:
    assert apply_database.retries == 5
    assert sum(apply_database.retry_delay_seconds) >= 30


def test_ordinary_tasks_give_up_soon() -> None:
    assert place_database.retries == 3
    assert sum(place_database.retry_delay_seconds) <= 10
