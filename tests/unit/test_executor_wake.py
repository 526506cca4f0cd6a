"""executor.loop.Executor.wake: delayed wake-ups keep coming (a fired timer hid the next one)."""

from __future__ import annotations

import asyncio
from typing import Any

from executor.loop import Executor


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
