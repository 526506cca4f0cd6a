"""The platform's one backoff policy: exponential, capped, jittered, within a budget.

Every loop that retries a transient failure (a watch that dropped, an API server restarting, a
Prefect server that is down) takes its pauses from :class:`Delays` built on a :class:`Backoff`,
so the platform backs off one way everywhere instead of ten hand-written ways.

- Exponential and capped: ``first``, doubling (``factor``), never more than ``cap``.
- Jittered ("equal jitter"): each pause is drawn from ``[d * (1 - jitter), d]``, so watchers of
  many clusters that lost one API server do not come back in lockstep; a pause never exceeds
  the unjittered delay, so ``cap`` stays a true bound.
- Budgeted: ``deadline`` (seconds since the first failure) and/or ``attempts`` (failures);
  once spent, :meth:`Delays.next` answers None and the caller raises its last error. A pause
  is shortened so that it never runs past the deadline.
- Only transient failures are retried: :func:`transient` is true for
  :class:`~fleetflow.errors.TemporaryError` and its subclasses; anything else is raised at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from fleetflow.errors import TemporaryError

log = logging.getLogger("fleetflow.backoff")
T = TypeVar("T")


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying: a :class:`TemporaryError` (or subclass)."""
    return isinstance(exc, TemporaryError)


@dataclass(frozen=True)
class Backoff:
    """How to pause between attempts; see the module docstring."""

    first: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2  # fraction of each pause that is random (0: none)
    deadline: float | None = None  # seconds from the first failure; None: no deadline
    attempts: int | None = None  # failures retried at most; None: no limit

    def delays(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> Delays:
        return Delays(self, clock=clock, rng=rng)


class Delays:
    """The pauses of one retry sequence; :meth:`reset` after a success starts it again."""

    def __init__(
        self,
        policy: Backoff,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.policy, self._clock, self._rng = policy, clock, rng
        self.reset()

    def reset(self) -> None:
        self.failures = 0
        self._started: float | None = None

    def next(self) -> float | None:
        """The pause before the next attempt, or None when the budget is spent."""
        policy = self.policy
        now = self._clock()
        if self._started is None:
            self._started = now
        self.failures += 1
        if policy.attempts is not None and self.failures > policy.attempts:
            return None
        delay = min(policy.cap, policy.first * policy.factor ** (self.failures - 1))
        delay *= 1.0 - policy.jitter * self._rng()
        if policy.deadline is not None:
            left = self._started + policy.deadline - now
            if left <= 0:
                return None
            delay = min(delay, left)
        return delay


def retry(
    what: str,
    call: Callable[[], T],
    policy: Backoff,
    *,
    is_transient: Callable[[BaseException], bool] = transient,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    stop: threading.Event | None = None,
) -> T:
    """``call()``, retried after transient failures with pauses from ``policy`` until its
    budget is spent (then the last error is raised) or ``stop`` is set (likewise). A failure that
    is not transient is raised at once."""
    delays = policy.delays(clock=clock)
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc) or (stop is not None and stop.is_set()):
                raise
            delay = delays.next()
            if delay is None:
                raise
            log.warning("%s: %s; retrying in %.1fs", what, _one_line(exc), delay)
            if stop is not None:
                if stop.wait(delay):
                    raise
            else:
                sleep(delay)


async def retry_async(
    what: str,
    call: Callable[[], Awaitable[T]],
    policy: Backoff,
    *,
    is_transient: Callable[[BaseException], bool] = transient,
) -> T:
    """The coroutine form of :func:`retry` (cancellation stops it)."""
    delays = policy.delays()
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = delays.next()
            if delay is None:
                raise
            log.warning("%s: %s; retrying in %.1fs", what, _one_line(exc), delay)
            await asyncio.sleep(delay)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
