"""The one backoff policy: exponential, capped, jittered, within a deadline or attempt budget,
retrying only transient (TemporaryError) failures."""

from __future__ import annotations

import asyncio
import threading

import pytest

from fleetflow.backoff import Backoff, retry, retry_async, transient
from fleetflow.errors import APIConflictError, APIInvalidError, APIUnavailableError, TemporaryError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_pauses_double_up_to_the_cap() -> None:
    delays = Backoff(first=0.5, cap=5.0, jitter=0.0).delays()
    assert [delays.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_jitter_shortens_pauses_by_at_most_its_fraction_and_never_exceeds_the_cap() -> None:
    policy = Backoff(first=1.0, cap=8.0, jitter=0.5)
    seen = [policy.delays().next() for _ in range(200)]
    assert all(d is not None and 0.5 <= d <= 1.0 for d in seen)
    assert len({round(d or 0, 6) for d in seen}) > 10, "pauses differ: watchers do not return in lockstep"
    long = policy.delays()
    assert all((long.next() or 0) <= 8.0 for _ in range(50))


def test_reset_starts_again_from_the_first_pause() -> None:
    delays = Backoff(first=0.5, jitter=0.0).delays()
    delays.next(), delays.next(), delays.next()
    delays.reset()
    assert delays.next() == 0.5


def test_an_attempt_budget_ends_the_pauses() -> None:
    delays = Backoff(attempts=2, jitter=0.0).delays()
    assert [delays.next(), delays.next(), delays.next()] == [0.5, 1.0, None]


def test_a_deadline_shortens_the_last_pause_and_then_ends_them() -> None:
    clock = Clock()
    delays = Backoff(first=1.0, cap=10.0, jitter=0.0, deadline=2.5).delays(clock=clock)
    got = []
    while (d := delays.next()) is not None:
        got.append(d)
        clock.sleep(d)
    assert got == [1.0, 1.5]
    assert clock.now - 100.0 == pytest.approx(2.5)


def test_only_temporary_errors_are_transient() -> None:
    assert transient(APIUnavailableError("down"))
    assert transient(APIConflictError("409"))
    assert not transient(APIInvalidError("422"))
    assert not transient(ValueError("bug"))


def test_retry_retries_transient_failures_until_success() -> None:
    clock = Clock()
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise APIUnavailableError("down")
        return "ok"

    policy = Backoff(jitter=0.0, deadline=60)
    assert retry("call", flaky, policy, sleep=clock.sleep, clock=clock) == "ok"
    assert clock.sleeps == [0.5, 1.0, 2.0]


def test_retry_raises_a_permanent_failure_at_once() -> None:
    clock = Clock()

    def refused() -> None:
        raise APIInvalidError("422 rejected")

    with pytest.raises(APIInvalidError):
        retry("call", refused, Backoff(), sleep=clock.sleep, clock=clock)
    assert clock.sleeps == []


def test_retry_raises_the_last_error_when_the_deadline_passes() -> None:
    clock = Clock()

    def down() -> None:
        raise APIUnavailableError("still down")

    with pytest.raises(APIUnavailableError, match="still down"):
        retry("call", down, Backoff(jitter=0.0, deadline=10), sleep=clock.sleep, clock=clock)
    assert sum(clock.sleeps) == pytest.approx(10.0)


def test_retry_stops_when_asked() -> None:
    stop = threading.Event()
    attempts = []

    def down() -> None:
        attempts.append(1)
        stop.set()
        raise TemporaryError("down")

    with pytest.raises(TemporaryError):
        retry("call", down, Backoff(), stop=stop)
    assert len(attempts) == 1


def test_retry_async_retries_transient_failures() -> None:
    calls = []

    async def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise APIUnavailableError("down")
        return 7

    assert asyncio.run(retry_async("call", flaky, Backoff(first=0.001, cap=0.001))) == 7
    assert len(calls) == 3
