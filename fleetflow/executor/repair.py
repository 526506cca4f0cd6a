"""Repair after a lost executor: heartbeats for the runs held here, and running again the runs
the platform crashed because another executor's heartbeats stopped.

An executor killed with SIGKILL (or whose machine died) cannot say so: its runs would stay
Running forever, and a run in flight holds back every later run of its deployment and
parameters (:mod:`executor.plan`). Prefect's answer is heartbeats plus a proactive automation
(``deployments.automations.lost_heartbeats``, after Prefect's guide to zombie flow runs).

Prefect's engine sends heartbeats itself, but never more often than every 30 s (a floor in the
engine and its settings), so the repair could never be quicker than that. The executor sends
them instead, for every run it holds (Pending or Running), every ``repairInterval / 3``
seconds, as the same event with the engine's resource and related resources (flow,
deployment, tags): the automation matches both. The process whose death matters is the
executor's; its flow runs are threads in it.

When the automation crashes a run, every executor sees its ``prefect.flow-run.Crashed`` event;
those serving its deployment schedule it again, unforced and with one transition id derived
from the crash, so the server makes one transition however many executors propose it; at most
:data:`executor.plan.REDO_LIMIT` times per run (:func:`executor.plan.redo_lost`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, State
from prefect.events import emit_event

from fleetflow.deployments.automations import HEARTBEAT, LOST_HEARTBEATS
from fleetflow.executor import prefect_api
from fleetflow.executor.plan import CRASHED, REDO_LIMIT, redo_lost

log = logging.getLogger("fleetflow.executor")
MISSED_HORIZON = timedelta(hours=1)  # how far back the poll looks for crashes it missed


def heartbeat_parts(flow_run: FlowRun) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The resource and related resources of a run's heartbeat, as Prefect's engine builds them."""
    resource = {
        "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
        "prefect.resource.name": flow_run.name or "",
    }
    roles = [("flow", f"prefect.flow.{flow_run.flow_id}" if flow_run.flow_id else None)]
    if flow_run.deployment_id:
        roles.append(("deployment", f"prefect.deployment.{flow_run.deployment_id}"))
    roles += [("tag", f"prefect.tag.{tag}") for tag in flow_run.tags]
    related = [{"prefect.resource.id": rid, "prefect.resource.role": role} for role, rid in roles if rid]
    return resource, related


async def heartbeats(client: PrefectClient, held: Callable[[], list[FlowRun]], every: float) -> None:
    """Until cancelled: one heartbeat per held run, every ``every`` seconds (a pace, not a wait).

    A run whose final state is set already gets none: its thread can outlive that state by a
    second (the engine's teardown), and a heartbeat after the final state would start a window
    that nothing closes (the automation would try to crash a finished run, and be refused).
    """
    while True:
        runs = held()
        try:
            ended = await prefect_api.finished(client, [r.id for r in runs]) if runs else set()
        except Exception as exc:  # cannot tell: beat for all, the server refuses crashing a final run
            log.warning("reading held runs' states failed: %s", exc)
            ended = set()
        for flow_run in runs:
            if flow_run.id in ended:
                continue
            resource, related = heartbeat_parts(flow_run)
            try:
                emit_event(event=HEARTBEAT, resource=resource, related=related)
            except Exception as exc:  # the events client reconnects by itself; the next beat retries
                log.warning("heartbeat of %s not sent: %s", flow_run.name, exc)
        await asyncio.sleep(every)


def lost(state: State[Any]) -> bool:
    """Whether ``state`` is the platform's crash of a run whose heartbeats stopped."""
    return bool(state.type.value == CRASHED and (state.message or "").startswith(LOST_HEARTBEATS))


async def redo(
    client: PrefectClient, run_id: UUID, crashed_state_id: UUID, executor: str, settled: set[UUID]
) -> bool:
    """Schedule again a run the platform crashed for lost heartbeats (the state ``crashed_state_id``),
    unless it moved on meanwhile or was redone :data:`REDO_LIMIT` times (then it joins
    ``settled``, said once); True if this call did."""
    states = sorted(await client.read_flow_run_states(run_id), key=lambda s: s.timestamp)
    if not states or states[-1].id != crashed_state_id:
        return False  # another executor redid it already, or somebody acted
    decided = redo_lost([(s.type.value, lost(s)) for s in states])
    if not decided.again:
        if decided.losses > REDO_LIMIT and run_id not in settled:
            settled.add(run_id)
            log.error(
                "executor %s: run %s lost its executor %d times; left Crashed (limit %d)",
                executor,
                run_id,
                decided.losses,
                REDO_LIMIT,
            )
        return False
    why = f"its executor was lost (heartbeats stopped; {decided.losses} of at most {REDO_LIMIT} times)"
    transition = uuid.uuid5(uuid.NAMESPACE_URL, f"fleetflow:redo:{crashed_state_id}")
    done = await prefect_api.reschedule(client, run_id, why, force=False, transition_id=transition)
    if done:
        log.warning("executor %s: run %s %s; rescheduled", executor, run_id, why)
    return done


async def redo_missed(
    client: PrefectClient, deployment_ids: list[UUID], executor: str, settled: set[UUID]
) -> int:
    """The fallback for Crashed events this executor missed (its event stream was down longer
    than the server's replay): redo the runs crashed for lost heartbeats in the last
    :data:`MISSED_HORIZON`; returns how many it rescheduled."""
    since = datetime.now(UTC) - MISSED_HORIZON
    redone = 0
    for run in await prefect_api.crashed_since(client, deployment_ids, since):
        if run.id not in settled and run.state is not None and lost(run.state):
            redone += await redo(client, run.id, run.state.id, executor, settled)
    return redone
