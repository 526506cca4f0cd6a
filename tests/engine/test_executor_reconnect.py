"""The executor's event stream while the Prefect server is down: it is looked for every few seconds.

It tries again at least every ``LISTEN_BACKOFF_MAX`` seconds, so the runs a restarted server
creates are heard of within seconds (a 30 s cap would start them up to 30 s late), and a stream
that connects again wakes a tick at once (runs created meanwhile are looked at).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fleetflow.executor import loop as loop_module
from fleetflow.executor.loop import LISTEN_BACKOFF_MAX, Executor


async def _nothing(_client: Any) -> dict[Any, Any]:
    return {}


class Down:
    """get_events_subscriber for a server that refuses ``refusals`` connections, then accepts."""

    def __init__(self, refusals: int) -> None:
        self.refusals, self.attempts = refusals, 0

    def __call__(self, **_kwargs: Any) -> Down:
        return self

    async def __aenter__(self) -> Down:
        self.attempts += 1
        if self.attempts <= self.refusals:
            raise ConnectionRefusedError(111, "Connect call failed")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        return None

    def __aiter__(self) -> Down:
        return self

    async def __anext__(self) -> Any:
        await asyncio.Event().wait()  # connected: no events until cancelled


def test_a_stopped_server_is_looked_for_every_few_seconds_and_a_reconnect_wakes_a_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = Down(refusals=8)
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float, *args: Any) -> None:
        waits.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(loop_module, "get_events_subscriber", server)
    monkeypatch.setattr(loop_module.asyncio, "sleep", sleep)

    async def scenario() -> bool:
        executor = Executor("t", _nothing, concurrency=1)
        listen = asyncio.create_task(executor._listen())
        try:
            await asyncio.wait_for(executor._listening.wait(), timeout=5)
            return executor._wake.is_set()
        finally:
            listen.cancel()
            await asyncio.gather(listen, return_exceptions=True)

    woken = asyncio.run(scenario())
    assert server.attempts == 9
    assert len(waits) == 8
    nominal = [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]  # doubling, capped; jitter shortens by <= 20 %
    assert all(0.8 * n <= w <= n for w, n in zip(waits, nominal, strict=True)), waits
    assert max(waits) <= LISTEN_BACKOFF_MAX
    assert woken, "a stream connected again must wake a tick for what was missed"
