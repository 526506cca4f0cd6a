"""The few Prefect API calls the executor makes, in Prefect's own client and state types."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterEndTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.client.schemas.sorting import FlowRunSort
from prefect.states import Cancelled, Crashed, Pending, Scheduled

from fleetflow.executor.plan import UNFINISHED, Run

PAGE = 200  # the server's largest page


def to_run(flow_run: FlowRun) -> Run:
    """The planning view of a run the server returned: of a deployment, in a state, created
    (the server sets all three; a run without them is not one the executor read)."""
    created = flow_run.created or flow_run.expected_start_time
    if flow_run.deployment_id is None or flow_run.state_type is None or created is None:
        raise ValueError(f"flow run {flow_run.id} has no deployment, state or creation time")
    return Run(
        id=flow_run.id,
        name=flow_run.name,
        deployment_id=flow_run.deployment_id,
        parameters=dict(flow_run.parameters),
        state=flow_run.state_type.value,
        created=created,
        expected_start=flow_run.expected_start_time,
    )


async def unfinished(
    client: PrefectClient, deployment_ids: list[UUID], states: tuple[str, ...] = UNFINISHED
) -> list[FlowRun]:
    """Every Scheduled, Pending or Running run of these deployments (paged)."""
    flt = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=deployment_ids),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(s) for s in states])),
    )
    found: dict[UUID, FlowRun] = {}
    offset = 0
    while True:
        page = await client.read_flow_runs(
            flow_run_filter=flt, sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=PAGE, offset=offset
        )
        found.update((r.id, r) for r in page)
        if len(page) < PAGE:
            return list(found.values())
        offset += PAGE


async def finished(client: PrefectClient, run_ids: list[UUID]) -> set[UUID]:
    """Which of these runs are in a final state now (one request)."""
    flt = FlowRunFilter(id=FlowRunFilterId(any_=run_ids))
    runs = await client.read_flow_runs(flow_run_filter=flt, limit=len(run_ids))
    return {r.id for r in runs if r.state is not None and r.state.is_final()}


async def crashed_since(client: PrefectClient, deployment_ids: list[UUID], since: datetime) -> list[FlowRun]:
    """Runs of these deployments that are Crashed and ended after ``since`` (one page, newest first)."""
    flt = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=deployment_ids),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CRASHED])),
        # validated, as the server's answer would be: Prefect types the field as its own DateTime
        end_time=FlowRunFilterEndTime.model_validate({"after_": since}),
    )
    return await client.read_flow_runs(flow_run_filter=flt, sort=FlowRunSort.END_TIME_DESC, limit=PAGE)


def claim_message(executor: str) -> str:
    return f"claimed by fleetflow executor {executor!r}"


async def claim(client: PrefectClient, run_id: UUID, executor: str) -> State[Any] | None:
    """Propose Pending; the server refuses it unless the run is Scheduled and due (one winner).
    Returns the Pending state the server accepted, or None."""
    state: State[Any] = Pending(message=claim_message(executor))
    result = await client.set_flow_run_state(run_id, state)
    if result.status != SetStateStatus.ACCEPT or result.state is None:
        return None
    return result.state


async def supersede(client: PrefectClient, run: Run, by: Run) -> bool:
    state: State[Any] = Cancelled(
        name="Superseded",
        message=(
            f"superseded by {by.name} ({by.id}), which runs the same deployment with the same "
            "parameters after the run in flight"
        ),
    )
    result = await client.set_flow_run_state(run.id, state)
    return result.status == SetStateStatus.ACCEPT


async def crash_and_reschedule(client: PrefectClient, run_id: UUID, why: str) -> None:
    """Mark a run Crashed (the UI shows why), then schedule it again so that it is redone."""
    await client.set_flow_run_state(run_id, Crashed(message=why), force=True)
    await reschedule(client, run_id, why, force=True)


async def reschedule(
    client: PrefectClient, run_id: UUID, why: str, *, force: bool, transition_id: UUID | None = None
) -> bool:
    """Schedule a finished run again (AwaitingRetry, due now); True if the server accepted.

    Unforced, the server's own rules apply; several executors proposing the same
    ``transition_id`` one after another make one transition (PreventDuplicateTransitions).
    """
    state: State[Any] = Scheduled(name="AwaitingRetry", message=f"rescheduled: {why}")
    state.state_details.transition_id = transition_id
    result = await client.set_flow_run_state(run_id, state, force=force)
    return result.status == SetStateStatus.ACCEPT
