"""The process's one event loop for informers, and the bridge to synchronous callers.

Every :class:`~fleetflow.kube.informer.Informer` of a process runs as a task on one event loop,
in one daemon thread (``kube-watch``), started on first use. Handlers are synchronous and may
block (a Kubernetes or Prefect call, a backoff while Prefect is down): they run on a small
bounded pool (``kube-handler-*``), one batch at a time per watch, so a watch's events are
handled in order and the process's thread count does not grow with the number of clusters.

- :meth:`Hub.watch` starts an informer whose event batches go to a handler; the returned
  :class:`Watch` is stopped from any thread (the open watch request is closed). With
  ``restart`` (a backoff policy) a watch that fails for good (its informer's permanent error or
  spent budget, a handler's bug) is started again after a pause, relisting: a controller's
  watch that must outlive everything but its stop.
- :meth:`Hub.run` runs a coroutine on the loop from synchronous code and returns its result
  (``KubeClient.wait``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fleetflow.backoff import Backoff, Delays
from fleetflow.errors import TemporaryError
from fleetflow.kube.informer import SYNCED, Event, Informer

log = logging.getLogger("fleetflow.kube.hub")
T = TypeVar("T")

HANDLER_THREADS = 4
MAX_BATCH = 200  # events handed to a handler in one call at most

Handler = Callable[[list[Event]], None]


class _InformerFailed(Exception):
    """What ended the informer, in its place in the queue; not retried by the handler's
    backoff (the informer had its own)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Watch:
    """One informer feeding one handler, until :meth:`stop` or a failure."""

    def __init__(
        self,
        hub: Hub,
        informer: Informer,
        handle: Handler,
        name: str,
        max_batch: int,
        ended: threading.Event | None,
        restart: Backoff | None = None,
    ) -> None:
        self.hub, self.informer, self.handle, self.name = hub, informer, handle, name
        self.max_batch, self._ended, self.restart = max_batch, ended, restart
        self.restarts = 0
        self.synced = threading.Event()  # the first listing was handled
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._future = asyncio.run_coroutine_threadsafe(self._main(), hub.loop)
        self._future.add_done_callback(self._finished)

    def _finished(self, future: concurrent.futures.Future[None]) -> None:
        if not future.cancelled():
            self.error = future.exception()
            if self.error is not None:
                log.warning("watch %s ended: %s", self.name, _one_line(self.error))
        self.done.set()
        if self._ended is not None:
            self._ended.set()

    async def _main(self) -> None:
        """Feed the handler until stopped; a handler that fails transiently (the API server or
        Prefect went away while it wrote) is given a fresh listing after a backoff, as a restart
        would: handlers are level-triggered, a relist shows them what they missed. Any other
        failure ends the watch, unless ``restart`` starts it again (until its budget is spent)."""
        delays = self.informer.backoff.delays()
        restarts = self.restart.delays() if self.restart is not None else None
        while True:
            try:
                await self._feed(delays, restarts)
            except _InformerFailed as failed:
                if restarts is None:
                    raise failed.error from None
                await self._restart(restarts, failed.error)
            except TemporaryError as exc:
                delay = delays.next() or self.informer.backoff.cap
                log.warning("%s: %s; relisting in %.1fs", self.name, _one_line(exc), delay)
                await asyncio.sleep(delay)
                self.informer.resource_version = ""
            except Exception as exc:  # the handler's
                if restarts is None:
                    raise
                await self._restart(restarts, exc)

    async def _restart(self, restarts: Delays, error: Exception) -> None:
        delay = restarts.next()
        if delay is None:
            raise error
        log.warning("watch %s failed: %s; starting it again in %.1fs", self.name, _one_line(error), delay)
        await asyncio.sleep(delay)
        self.restarts += 1
        self.informer.resource_version = ""

    async def _feed(self, delays: Delays, restarts: Delays | None) -> None:
        inbox: asyncio.Queue[Event | _InformerFailed] = asyncio.Queue()

        async def read() -> None:
            try:
                async for event in self.informer.events():
                    inbox.put_nowait(event)
                    await asyncio.sleep(0)  # let the handler's side run, however fast events come
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # handed over in order, after the events before it
                inbox.put_nowait(_InformerFailed(exc))

        reader = asyncio.create_task(read(), name=f"informer {self.name}")
        loop = asyncio.get_running_loop()
        try:
            while True:
                batch = [await inbox.get()]
                while len(batch) < self.max_batch and not inbox.empty():
                    if isinstance(batch[-1], _InformerFailed):
                        break
                    batch.append(inbox.get_nowait())
                found = [item for item in batch if isinstance(item, Event)]
                if found:
                    await loop.run_in_executor(self.hub.pool, self.handle, found)
                    delays.reset()
                    if restarts is not None:
                        restarts.reset()
                    if any(event.type == SYNCED for event in found):
                        self.synced.set()
                if isinstance(batch[-1], _InformerFailed):
                    raise batch[-1]  # the informer's own backoff is spent, or permanent
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    def stop(self) -> None:
        """Stop from any thread: the watch request is closed; a batch being handled finishes."""
        self._future.cancel()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until it ended; raise what ended it (a stop is not an error). False on timeout."""
        if not self.done.wait(timeout):
            return False
        if self.error is not None:
            raise self.error
        return True


class Hub:
    """The event-loop thread and the handlers' pool."""

    def __init__(self, handler_threads: int = HANDLER_THREADS) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool = concurrent.futures.ThreadPoolExecutor(handler_threads, thread_name_prefix="kube-handler")
        self.loop.set_default_executor(self.pool)  # discovery lookups (asyncio.to_thread) too
        self.thread = threading.Thread(target=self.loop.run_forever, name="kube-watch", daemon=True)
        self.thread.start()

    def watch(
        self,
        informer: Informer,
        handle: Handler,
        *,
        name: str,
        max_batch: int = MAX_BATCH,
        stop: threading.Event | None = None,
        restart: Backoff | None = None,
    ) -> Watch:
        """Start ``informer``; its events go to ``handle`` in batches, in order, off the loop.
        ``stop`` (if given) is set when the watch ends, so a caller waiting on it wakes up to a
        failure as well as to its own stop. ``restart``: see the module docstring."""
        return Watch(self, informer, handle, name, max_batch, stop, restart)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (from any thread but the loop's)."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("Hub.run called on the hub's own loop thread")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # interrupted (Ctrl-C): the coroutine stops too
            raise


_hub: Hub | None = None
_hub_lock = threading.Lock()


def hub() -> Hub:
    """The process's hub, started on first use."""
    global _hub
    with _hub_lock:
        if _hub is None:
            _hub = Hub()
        return _hub


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
