"""Applying deployments and automations through a Prefect server that is busy or restarting.

A Prefect server on SQLite answers 503 while its database is locked by a burst of writes, and
any server refuses connections while it restarts. ``fleetflow executor --deploy`` and
``fleetflow deploy`` must not die of that: an executor that exits at start leaves the platform
without deployments. Transient answers (connection errors, 5xx, 408, 429) are retried with
backoff until a deadline; any other failure (a 4xx: a bad deployment) fails at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import httpx
from prefect.exceptions import PrefectHTTPStatusError

from fleetflow import events

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
    """``call()``, retried on transient failures (0.5 s doubling up to 10 s) until the deadline."""
    deadline = clock() + deadline_seconds
    backoff = 0.5
    while True:
        try:
            return call()
        except Exception as exc:
            if not transient(exc) or clock() + backoff > deadline:
                raise
            log.warning("%s: %s; retrying in %.1fs", what, type(exc).__name__, backoff)
            sleep(backoff)
            backoff = min(backoff * 2, 10.0)
