"""``fleetflow executor``: start one executor against ``PREFECT_API_URL`` and run until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import httpx
from prefect import Flow
from prefect.client.orchestration import PrefectClient
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL

from fleetflow import config
from fleetflow.deployments import platform
from fleetflow.errors import TemporaryError, UsageError
from fleetflow.executor.loop import Executor

log = logging.getLogger("fleetflow.executor")


def default_name() -> str:
    return socket.gethostname()


Resolver = Callable[[PrefectClient], Awaitable[dict[UUID, Flow[..., Any]]]]


def resolver(flows: list[Flow[..., Any]], deployment: str) -> Resolver:
    """Finds the deployments named ``deployment`` of ``flows`` on the server, by id."""

    async def resolve(client: PrefectClient) -> dict[UUID, Flow[..., Any]]:
        found: dict[UUID, Flow[..., Any]] = {}
        missing = []
        for flow in flows:
            try:
                found[(await client.read_deployment_by_name(f"{flow.name}/{deployment}")).id] = flow
            except ObjectNotFound:
                missing.append(flow.name)
        if missing:
            log.warning("deployments not found yet (run 'fleetflow deploy'): %s", ", ".join(missing))
        return found

    return resolve


def _lock(name: str) -> int:
    """One executor per name and home: its name is how it recognises its own runs after a crash."""
    path = config.home() / "executor" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(
            f"an executor named {name!r} already runs with this home; give another --name"
        ) from None
    return fd


def run(
    *,
    name: str | None,
    concurrency: int,
    poll_seconds: float,
    grace_seconds: float,
    deploy: bool,
    operator_chart: dict[str, Any] | None,
    deletion_policy: str,
) -> int:
    if concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, not {concurrency}")
    if poll_seconds <= 0 or grace_seconds < 0:
        raise UsageError("--poll must be positive and --grace not negative")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if deploy:
        ids = platform.apply_all(operator_chart, deletion_policy)
        log.info("%d deployments and their automations applied", len(ids))
    return serve(
        name,
        resolver(platform.FLOWS, platform.NAME),
        concurrency=concurrency,
        poll_seconds=poll_seconds,
        grace_seconds=grace_seconds,
    )


def serve(
    name: str | None, resolve: Resolver, *, concurrency: int, poll_seconds: float, grace_seconds: float
) -> int:
    """Run an executor for the deployments ``resolve`` finds until SIGTERM or SIGINT."""
    name = name or default_name()
    repair = config.repair_interval()  # heartbeats at the pace the platform's automation expects
    lock = _lock(name)
    executor = Executor(
        name,
        resolve,
        concurrency=concurrency,
        poll_seconds=poll_seconds,
        grace_seconds=grace_seconds,
        heartbeat_seconds=repair.heartbeat,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def ready() -> None:
            print(
                f"executor ready: {name!r}, {len(executor.deployment_ids)} deployments, "
                f"concurrency {concurrency}",
                flush=True,
            )

        await executor.serve(stop, ready)

    try:
        asyncio.run(main())
    except (OSError, httpx.HTTPError, PrefectHTTPStatusError) as exc:
        os.close(lock)
        raise TemporaryError(
            f"executor {name!r}: the Prefect API at {PREFECT_API_URL.value()} failed: {type(exc).__name__}"
        ) from None
    log.info("executor %s stopped after %d run(s)", name, executor.executed)
    os.close(lock)
    if any(t.name.startswith("flow-run") and t.is_alive() for t in threading.enumerate()):
        # Runs past the grace period were rescheduled for another executor; their threads cannot
        # be interrupted, so leave without waiting for them.
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(0)
    return 0
