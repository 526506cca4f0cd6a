"""The one way a test waits for something it cannot watch: poll with a short backoff and a deadline.

:func:`eventually` calls ``check`` until it returns a truthy value, which it returns. An exception
from ``check`` counts as "not yet" (a server may be restarting); when the deadline passes the test
fails with what was awaited and the last value or exception seen, so a timeout says what was
missing rather than only that time ran out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

FIRST_PAUSE = 0.02  # seconds: most conditions hold within a few milliseconds of the action
MAX_PAUSE = 0.5  # seconds: the longest pause between two checks
GROWTH = 1.5


class EventuallyTimeout(AssertionError):
    """``check`` did not hold within the deadline; the message names what was awaited."""


def eventually(
    check: Callable[[], T],
    awaiting: str,
    timeout: float = 60.0,
    *,
    max_pause: float = MAX_PAUSE,
    detail: Callable[[], str] | None = None,
) -> T:
    """``check()`` until it returns a truthy value (returned); fail after ``timeout`` seconds with
    "timed out after Ns awaiting <awaiting>; last: <last value or exception>", followed by
    ``detail()`` when given (for example the tails of the platform's logs)."""
    deadline = time.monotonic() + timeout
    pause = FIRST_PAUSE
    last: object = None
    while True:
        try:
            result = check()
        except Exception as exc:  # "not yet": the last one is reported on timeout
            last = exc
        else:
            if result:
                return result
            last = result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            shown = f"{type(last).__name__}: {last}" if isinstance(last, BaseException) else repr(last)
            message = f"timed out after {timeout:g}s awaiting {awaiting}; last: {shown}"
            if detail is not None:
                message += "\n" + detail()
            raise EventuallyTimeout(message) from (last if isinstance(last, BaseException) else None)
        time.sleep(min(pause, remaining, max_pause))  # between checks, within the deadline
        pause *= GROWTH
