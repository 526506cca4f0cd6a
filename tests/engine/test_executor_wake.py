"""executor.loop.Executor.wake: delayed wake-ups keep coming (a fired timer hid the next one)."""

from __future__ import annotations

import asyncio
from typing import Any

from fleetflow.executor.loop import Executor


async def _nothing(_client: Any) -> dict[Any, Any]:
    return {}


def test_every_delayed_wake_up_arrives() -> None:
    async def scenario() -> int:
        executor = Executor("t", _nothing, concurrency=1)
        woken = 0
        for _ in range(3):  # e.g. an unseen run looked at again, then a run scheduled for later
            executor.wake(after=0.01)
            await asyncio.wait_for(executor._wake.wait(), timeout=2)
            executor._wake.clear()
            woken += 1
        return woken

    assert asyncio.run(scenario()) == 3


def test_a_claim_in_flight_when_stopping_is_still_run(monkeypatch: Any) -> None:
    """SIGTERM while a claim is on the wire: the accepted claim's run is started (and drained),
    not left Pending for ever (CI saw 40 runs never finish when the tick was cancelled)."""
    import uuid
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from fleetflow.executor import loop as loop_module

    deployment = uuid.uuid4()
    run = SimpleNamespace(
        id=uuid.uuid4(),
        name="r",
        deployment_id=deployment,
        parameters={},
        state_type=SimpleNamespace(value="SCHEDULED"),
        created=datetime.now(UTC),
        expected_start_time=datetime.now(UTC),
        state=None,
    )
    claim_entered, claim_answer = asyncio.Event(), asyncio.Event()

    async def unfinished(*_args: Any) -> list[Any]:
        return [run]

    async def claim(*_args: Any) -> str:
        claim_entered.set()
        await claim_answer.wait()
        return "Pending"

    monkeypatch.setattr(loop_module.prefect_api, "unfinished", unfinished)
    monkeypatch.setattr(loop_module.prefect_api, "claim", claim)
    monkeypatch.setattr(
        loop_module.prefect_api,
        "to_run",
        lambda r: loop_module.prefect_api.Run(
            id=r.id,
            name=r.name,
            deployment_id=r.deployment_id,
            parameters={},
            state="SCHEDULED",
            created=r.created,
            expected_start=r.expected_start_time,
        ),
    )

    async def scenario() -> list[Any]:
        executor = Executor("t", _nothing, concurrency=2)
        executor._deployments = {deployment: object()}  # type: ignore[dict-item]
        executor._client = None  # type: ignore[assignment]
        started: list[Any] = []
        executor._start = started.append  # type: ignore[method-assign]
        idle = asyncio.create_task(asyncio.sleep(3600))
        ticks = asyncio.create_task(executor._ticks())
        executor.wake()
        await asyncio.wait_for(claim_entered.wait(), timeout=5)
        stopping = asyncio.create_task(executor._stop(idle, asyncio.create_task(asyncio.sleep(3600)), ticks))
        await asyncio.sleep(0)  # let the stop begin while the claim is still unanswered
        claim_answer.set()
        await asyncio.wait_for(stopping, timeout=5)
        return started

    started = asyncio.run(scenario())
    assert [r.id for r in started] == [run.id], "the claimed run was never started"
