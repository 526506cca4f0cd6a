"""Applying deployments and automations through a Prefect server that is busy or restarting.

A Prefect server on SQLite answers 503 while its database is locked by a burst of writes, and
any server refuses connections while it restarts. ``fleetflow executor --deploy`` and
``fleetflow deploy`` must not die of that: an executor that exits at start leaves the platform
without deployments. Transient answers (connection errors, 5xx, 408, 429) are retried with
backoff (:mod:`fleetflow.backoff`) until a deadline; any other failure (a 4xx: a bad deployment)
fails at once. Prefect's own exceptions are classified here (:func:`transient`), since they are
not fleetflow's TemporaryError.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import httpx
from prefect.exceptions import PrefectHTTPStatusError

from fleetflow import events
from fleetflow.backoff import Backoff, retry

log = logging.getLogger("fleetflow.deploy")
T = TypeVar("T")


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps, e.g. Prefect's DeploymentApplyError) is worth a retry."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PrefectHTTPStatusError | httpx.HTTPStatusError):
            return events.transient_status(current.response.status_code)
        if isinstance(current, httpx.TransportError | ConnectionError):
            return True
        current = current.__cause__ or current.__context__
    return False


def retrying(
    what: str,
    call: Callable[[], T],
    *,
    deadline_seconds: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``call()``, retried on transient failures with the platform's backoff (0.5 s doubling up
    to 10 s, jittered) until the deadline."""
    policy = Backoff(first=0.5, cap=10.0, deadline=deadline_seconds)
    return retry(what, call, policy, is_transient=transient, sleep=sleep, clock=clock)
