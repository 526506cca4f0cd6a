"""How long a task keeps retrying transient failures before its run fails.

Ordinary API tasks give up after about 7 s (1, 2 and 4 s apart): a cluster that cannot be reached
is reported soon. converge-database-request, which waits minutes for a database anyway, must
outlast a restarting API server (up to 12 s on the local fleet under load; the fault test
``test_fault_apiserver`` needed 5 attempts across an outage of 19 s).
"""

from __future__ import annotations

from fleetflow.tasks.database import request_label_database
from fleetflow.tasks.databases import converge_request


def test_converging_a_database_retries_through_an_api_server_restart() -> None:
    assert converge_request.retries == 5
    assert sum(converge_request.retry_delay_seconds) >= 30


def test_ordinary_tasks_give_up_soon() -> None:
    assert request_label_database.retries == 3
    assert sum(request_label_database.retry_delay_seconds) <= 10
