"""The executor's event loop: wake on events or the fallback poll, plan, claim, run in a pool.

One asyncio loop (the main thread) talks to the Prefect API; claimed runs execute in a
bounded thread pool with Prefect's engine. Wake-ups are cheap and coalesce: any number of
events between two ticks cause one more tick, which reads every unfinished run of the
executor's deployments and applies :func:`executor.plan.plan` to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.context import SyncClientContext
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.flow_engine import run_flow

from fleetflow.backoff import Backoff
from fleetflow.executor import prefect_api, repair
from fleetflow.executor.plan import PENDING, RUNNING, plan

log = logging.getLogger("fleetflow.executor")

WAKE_ON = [
    f"prefect.flow-run.{name}"
    for name in ("Scheduled", "AwaitingRetry", "Late", "Completed", "Failed", "Crashed", "Cancelled")
]
UNSEEN_RETRY = 0.1  # an announced run not readable yet (the event can beat the commit): look again
UNSEEN_TRIES = 50
# A stopped Prefect server is looked for again at least this often: the event stream is how the
# executor hears of new runs at once, so a longer pause delays every run a restarted server
# creates by up to that long.
LISTEN_BACKOFF_MAX = 5.0
LISTEN_BACKOFF = Backoff(first=0.5, cap=LISTEN_BACKOFF_MAX)  # reconnecting the event stream
TICK_PAUSE_PER_RUN = 0.005
TICK_PAUSE_MAX = 1.0


def _keep_a_client() -> None:
    """Give this pool thread one Prefect client for all its runs: the engine reuses a client in
    context, where it would otherwise open a new one per run (with its version, storage and CSRF
    requests: 13 requests per run instead of 6)."""
    SyncClientContext().__enter__()


class Executor:
    """Runs the flow runs of ``deployments`` (deployment id -> flow); see the package docstring."""

    def __init__(
        self,
        name: str,
        resolve: Callable[[PrefectClient], Any],
        *,
        concurrency: int = 16,
        poll_seconds: float = 10.0,
        grace_seconds: float = 60.0,
        heartbeat_seconds: float = 30.0,
    ) -> None:
        """``resolve(client)`` is a coroutine function returning ``{deployment id: flow}``."""
        self.name = name
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.grace_seconds = grace_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self._resolve = resolve
        self._deployments: dict[UUID, Flow[..., Any]] = {}
        self._pool = ThreadPoolExecutor(
            concurrency, thread_name_prefix="flow-run", initializer=_keep_a_client
        )
        self._active: dict[UUID, Future[None]] = {}
        self._held: dict[UUID, FlowRun] = {}  # the runs of ``_active``, for their heartbeats
        self._repairs: set[asyncio.Task[bool]] = set()
        self._settled: set[UUID] = set()  # runs crashed too often to be redone (said once)
        self._unseen: dict[UUID, int] = {}  # runs announced by an event, not yet read
        self._wake = asyncio.Event()
        self._listening = asyncio.Event()
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self.executed = 0

    # -- life cycle ---------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event, ready: Callable[[], None]) -> None:
        async with get_client() as client:
            self._client = client
            self._deployments = await self._resolve(client)
            await self._recover()
            beating = asyncio.create_task(repair.heartbeats(client, self._holding, self.heartbeat_seconds))
            loops = [
                asyncio.create_task(self._listen(), name="listen"),
                asyncio.create_task(self._poll(), name="poll"),
                asyncio.create_task(self._ticks(), name="ticks"),
            ]
            try:
                await asyncio.wait_for(self._listening.wait(), timeout=30)
            except TimeoutError:
                log.warning("executor %s: event stream not connected; relying on the poll", self.name)
            ready()
            await stop.wait()
            await self._stop(*loops)
            await self._drain()  # runs past the grace period were rescheduled: no more heartbeats
            beating.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _stop(
        self, listen: asyncio.Task[None], poll: asyncio.Task[None], ticks: asyncio.Task[None]
    ) -> None:
        """Stop claiming. The tick in progress is let finish, never cancelled: a claim the server
        accepted but whose run was not started yet would otherwise stay Pending, run by nobody."""
        self._closing = True
        listen.cancel()
        poll.cancel()
        self._wake.set()
        await asyncio.gather(listen, poll, ticks, return_exceptions=True)

    async def _recover(self) -> None:
        """Crash and reschedule the runs a previous life of this executor left unfinished."""
        mine = prefect_api.claim_message(self.name)
        for run in await prefect_api.unfinished(self._client, self.deployment_ids, (PENDING, RUNNING)):
            states = sorted(await self._client.read_flow_run_states(run.id), key=lambda s: s.timestamp)
            claims = [s for s in states if s.type.value == PENDING]
            if claims and claims[-1].message == mine:
                was = run.state.name if run.state else "unfinished"
                why = f"executor {self.name!r} restarted while this run was {was}"
                await prefect_api.crash_and_reschedule(self._client, run.id, why)
                log.warning("executor %s: %s %s: %s; rescheduled", self.name, run.name, run.id, why)

    async def _drain(self) -> None:
        """Finish what is held within the grace period; reschedule the rest for another executor."""
        pending = [asyncio.wrap_future(f) for f in self._active.values()]
        if pending:
            log.info("executor %s: stopping; finishing %d run(s)", self.name, len(pending))
            await asyncio.wait(pending, timeout=self.grace_seconds)
        for run_id, future in list(self._active.items()):
            if not future.done():
                why = f"executor {self.name!r} stopped before the run finished"
                await prefect_api.crash_and_reschedule(self._client, run_id, why)
                log.warning("executor %s: run %s: %s; rescheduled", self.name, run_id, why)

    @property
    def deployment_ids(self) -> list[UUID]:
        return list(self._deployments)

    # -- waking -------------------------------------------------------------------------------

    def wake(self, after: float = 0.0) -> None:
        if after <= 0:
            self._wake.set()
            return
        if self._timer is not None and self._timer.when() <= asyncio.get_running_loop().time() + after:
            return  # an earlier wake-up is already due
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(after, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None  # a fired timer must not hide the next delayed wake-up
        self._wake.set()

    async def _listen(self) -> None:
        delays = LISTEN_BACKOFF.delays()  # no budget: the poll covers while it reconnects
        flt = EventFilter(event=EventNameFilter(name=WAKE_ON))
        while True:
            try:
                async with get_events_subscriber(filter=flt) as events:
                    self._listening.set()
                    delays.reset()
                    self.wake()  # anything missed while disconnected
                    async for event in events:
                        deployment = next(
                            (r.id.rsplit(".", 1)[-1] for r in event.related if r.role == "deployment"), None
                        )
                        if deployment is None or UUID(deployment) not in self._deployments:
                            continue
                        if event.event == "prefect.flow-run.Crashed":
                            self._redo(event.resource.id, event.id)
                        if event.event.endswith((".Scheduled", ".AwaitingRetry", ".Late")):
                            self._unseen.setdefault(UUID(event.resource.id.rsplit(".", 1)[-1]), 0)
                        self.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server restarted or the stream broke: the poll covers
                log.warning("executor %s: event stream lost (%s); reconnecting", self.name, exc)
            await asyncio.sleep(delays.next() or LISTEN_BACKOFF_MAX)

    async def _poll(self) -> None:
        """The fallback: every ``poll_seconds`` look at everything (this also keeps the
        deployments "Ready" in the UI, which counts a deployment as served while it is polled)."""
        while True:
            try:
                if not self._deployments:
                    self._deployments = await self._resolve(self._client)
                if self._deployments:
                    await self._client.get_scheduled_flow_runs_for_deployments(
                        self.deployment_ids, scheduled_before=datetime.now(UTC), limit=1
                    )
                    await repair.redo_missed(self._client, self.deployment_ids, self.name, self._settled)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("executor %s: poll failed: %s", self.name, exc)
            self.wake()
            await asyncio.sleep(self.poll_seconds)

    async def _ticks(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            try:
                seen = await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("executor %s: %s: %s; looking again shortly", self.name, type(exc).__name__, exc)
                self.wake(after=1.0)
                continue
            # Reading many unfinished runs is a heavy query for the server: in a burst, wake-ups
            # that arrive meanwhile are served by one later tick (5 ms per run seen, at most 1 s).
            await asyncio.sleep(min(TICK_PAUSE_MAX, TICK_PAUSE_PER_RUN * seen))

    # -- one tick -----------------------------------------------------------------------------

    async def _tick(self) -> int:
        """One look at every unfinished run; returns how many there were."""
        if self._closing or not self._deployments:
            return 0
        flow_runs = {r.id: r for r in await prefect_api.unfinished(self._client, self.deployment_ids)}
        now = datetime.now(UTC)
        decided = plan(
            [prefect_api.to_run(r) for r in flow_runs.values()], now, self.concurrency - len(self._active)
        )
        results = await asyncio.gather(
            *(prefect_api.supersede(self._client, run, by) for run, by in decided.supersede),
            return_exceptions=True,
        )
        for (run, by), ok in zip(decided.supersede, results, strict=True):
            if ok is True:
                log.info("executor %s: %s superseded by %s", self.name, run.name, by.name)
        claimed = await asyncio.gather(
            *(prefect_api.claim(self._client, run.id, self.name) for run in decided.claim),
            return_exceptions=True,
        )
        for run, state in zip(decided.claim, claimed, strict=True):
            if isinstance(state, BaseException):
                log.warning("executor %s: claiming %s failed: %s", self.name, run.name, state)
                await self._release_if_claimed(run.id)
            elif state is not None:
                flow_run = flow_runs[run.id]
                flow_run.state = state
                self._start(flow_run)
        for run_id in list(self._unseen):
            tries = self._unseen[run_id]
            if run_id in flow_runs or tries >= UNSEEN_TRIES or await self._finished_already(run_id):
                del self._unseen[run_id]
            else:
                self._unseen[run_id] = tries + 1
        if self._unseen:
            self.wake(after=UNSEEN_RETRY)
        if decided.next_due is not None:
            self.wake(after=max((decided.next_due - now).total_seconds(), 0.05))
        return len(flow_runs)

    def _holding(self) -> list[FlowRun]:
        return [run for run_id, run in self._held.items() if not self._active[run_id].done()]

    def _redo(self, resource_id: str, state_id: UUID) -> None:
        """A run of ours crashed: if the platform crashed it for lost heartbeats, run it again."""
        run_id = UUID(resource_id.rsplit(".", 1)[-1])
        task = asyncio.create_task(repair.redo(self._client, run_id, state_id, self.name, self._settled))
        self._repairs.add(task)
        task.add_done_callback(self._repaired)

    def _repaired(self, task: asyncio.Task[bool]) -> None:
        self._repairs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("executor %s: redoing a crashed run failed: %s", self.name, task.exception())

    async def _release_if_claimed(self, run_id: UUID) -> None:
        """A claim whose answer was lost may still have been accepted: give such a run back."""
        try:
            run = await self._client.read_flow_run(run_id)
            mine = prefect_api.claim_message(self.name)
            if run.state and run.state.type.value == PENDING and run.state.message == mine:
                why = f"executor {self.name!r} lost the answer to its claim"
                await prefect_api.crash_and_reschedule(self._client, run_id, why)
        except Exception as exc:  # the next start of this executor recovers it
            log.warning("executor %s: could not check claim of %s: %s", self.name, run_id, exc)

    async def _finished_already(self, run_id: UUID) -> bool:
        try:
            run = await self._client.read_flow_run(run_id)
        except Exception:  # not committed yet (404): keep looking
            return False
        return run.state is not None and run.state.is_final()

    def _start(self, flow_run: FlowRun) -> None:
        assert flow_run.deployment_id is not None  # noqa: S101
        flow = self._deployments[flow_run.deployment_id]
        future = self._pool.submit(self._execute, flow, flow_run)
        self._active[flow_run.id] = future
        self._held[flow_run.id] = flow_run
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda _f: loop.call_soon_threadsafe(self._done, flow_run.id))

    def _done(self, run_id: UUID) -> None:
        self._active.pop(run_id, None)
        self._held.pop(run_id, None)
        self.executed += 1
        self.wake()

    def _execute(self, flow: Flow[..., Any], flow_run: FlowRun) -> None:
        try:
            state = run_flow(flow, flow_run=flow_run, return_type="state")
            log.info(
                "executor %s: %s %s: %s", self.name, flow.name, flow_run.name, getattr(state, "name", state)
            )
        except BaseException as exc:  # the engine records the run's failure; keep the thread alive
            log.error(
                "executor %s: %s %s ended with %s", self.name, flow.name, flow_run.name, type(exc).__name__
            )
