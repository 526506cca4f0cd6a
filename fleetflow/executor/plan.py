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

A run that the platform crashed because its executor's heartbeats stopped is run again by the
surviving executors (:func:`redo_lost`), a bounded number of times: a run that kills its
executor every time must not take every executor of the platform down in turn, forever.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

SCHEDULED, PENDING, RUNNING, CRASHED = "SCHEDULED", "PENDING", "RUNNING", "CRASHED"
UNFINISHED = (SCHEDULED, PENDING, RUNNING)
REDO_LIMIT = 3  # times one run is run again after its executor was lost


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


@dataclass(frozen=True)
class Redo:
    again: bool  # schedule the run again
    losses: int  # how often the run was crashed because its executor's heartbeats stopped


def redo_lost(history: list[tuple[str, bool]], limit: int = REDO_LIMIT) -> Redo:
    """Whether to run again a run whose states so far (oldest first) were ``history``, each as
    (state type, crashed for lost heartbeats): only a run whose current state is such a crash,
    and at most ``limit`` times; after that it stays Crashed for a person to look at."""
    losses = sum(1 for state, lost in history if state == CRASHED and lost)
    now_lost = bool(history) and history[-1][0] == CRASHED and history[-1][1]
    return Redo(again=now_lost and losses <= limit, losses=losses)
