"""What an executor does with a snapshot of the server's unfinished runs: pure logic.

Every executor reading the same snapshot decides the same thing, so several executors agree
without talking to each other. Runs are grouped by deployment and parameters (identical work);
within a group, ordered by creation:

- while a run of the group is in flight (Pending or Running), the first due Scheduled run
  waits, and every later one is superseded by it;
- otherwise the first due run is the one to claim, the second waits, the rest are superseded
  by the second.

A waiting run starts after the run in flight finished, so it sees every change that the
superseded runs were created for: nothing is lost by dropping them. A run scheduled for later
(``expected_start_time`` in the future, e.g. the reconcile schedule) is left alone; the
earliest such time is reported so the executor can wake for it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

SCHEDULED, PENDING, RUNNING = "SCHEDULED", "PENDING", "RUNNING"
UNFINISHED = (SCHEDULED, PENDING, RUNNING)


@dataclass(frozen=True)
class Run:
    """The parts of a Prefect flow run that planning needs."""

    id: UUID
    name: str
    deployment_id: UUID
    parameters: dict[str, Any]
    state: str  # SCHEDULED, PENDING or RUNNING
    created: datetime
    expected_start: datetime | None = None

    @property
    def key(self) -> tuple[UUID, str]:
        return self.deployment_id, json.dumps(self.parameters, sort_keys=True, default=str)

    def due(self, now: datetime) -> bool:
        return self.state == SCHEDULED and (self.expected_start is None or self.expected_start <= now)


@dataclass
class Plan:
    claim: list[Run] = field(default_factory=list)  # at most ``slots``, oldest first
    supersede: list[tuple[Run, Run]] = field(default_factory=list)  # (run, the run that supersedes it)
    next_due: datetime | None = None  # the earliest start of a run scheduled for later


def plan(runs: list[Run], now: datetime, slots: int) -> Plan:
    groups: dict[tuple[UUID, str], list[Run]] = defaultdict(list)
    result = Plan()
    for run in runs:
        if run.state == SCHEDULED and not run.due(now):
            if run.expected_start is not None and (
                result.next_due is None or run.expected_start < result.next_due
            ):
                result.next_due = run.expected_start
            continue
        groups[run.key].append(run)
    candidates: list[Run] = []
    for group in groups.values():
        group.sort(key=lambda r: (r.created, str(r.id)))
        due = [r for r in group if r.state == SCHEDULED]
        in_flight = any(r.state in (PENDING, RUNNING) for r in group)
        start = [] if in_flight else due[:1]
        waiting = due[len(start) : len(start) + 1]
        candidates += start
        result.supersede += [(r, waiting[0]) for r in due[len(start) + 1 :]]
    candidates.sort(key=lambda r: (r.created, str(r.id)))
    result.claim = candidates[: max(slots, 0)]
    return result
