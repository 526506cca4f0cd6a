"""The one place that lists and watches: an informer over raw Kubernetes HTTP, on asyncio.

An :class:`Informer` lists a kind (optionally one namespace, label and field selectors), then
watches from the list's resourceVersion, and hands its caller typed :class:`Event` values:

- ``SYNCED`` after every (re)list, with the whole listing, so a caller can diff its state
  against what is there (level-triggered: changes made while no watch ran count too);
- ``ADDED``, ``MODIFIED``, ``DELETED`` from the watch (``BOOKMARK`` events only advance the
  resourceVersion and are not handed on; ``allowWatchBookmarks`` is always asked for).

A watch that ends (its server-side ``timeoutSeconds`` passed) or drops (connection reset, API
server restarting) resumes from the last resourceVersion seen, without relisting; ``410 Gone``
(the version was compacted away, or the API server restarted with an empty watch cache) relists,
and the caller gets a new ``SYNCED``. Every request has a client-side timeout too: a list
``transport.REQUEST_TIMEOUT``, a watch's read its ``timeoutSeconds`` plus some slack, so a
silently dead connection is noticed. Transient failures back off with the platform's policy
(:mod:`fleetflow.backoff`); permanent ones (403, 404 of the kind) are raised to the caller,
except that ``retry_not_served`` waits for a kind to be served (a CRD being installed).

Why asyncio and not a thread per watch: the ``fleetflow watch`` process follows three kinds on
every registered cluster (Database requests, CloudNativePG ``-app`` Secrets and Clusters) plus
the registry; threads blocked in the client library's streaming reads cost 3 per cluster.
Here every watch is a task on the one event loop of :mod:`fleetflow.kube.hub`, and handlers
(which block: Kubernetes and Prefect calls) run on its small bounded pool. A synchronous
informer multiplexing a cluster's watches on one thread would need a hand-made select over the
client library's sockets; httpx streams over asyncio give the same for free.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import httpx

from fleetflow.backoff import Backoff
from fleetflow.errors import APIGoneError, APINotFoundError, APIUnavailableError, TemporaryError
from fleetflow.kube.transport import get_json, watch_lines
from fleetflow.labels import Selector

if TYPE_CHECKING:
    from fleetflow.kube.client import KubeClient

log = logging.getLogger("fleetflow.kube.informer")

WATCH_TIMEOUT = 300  # seconds a watch request lasts on the server before it is resumed
WATCH_BACKOFF = Backoff(first=0.5, cap=30.0)
NOT_SERVED_BACKOFF = Backoff(first=0.5, cap=10.0)  # how late a newly served kind is noticed

EventType = Literal["SYNCED", "ADDED", "MODIFIED", "DELETED"]
SYNCED: EventType = "SYNCED"


@dataclass(frozen=True)
class Event:
    """One change, or (``SYNCED``) a complete listing in ``items``."""

    type: EventType
    object: dict[str, Any] = field(default_factory=dict)
    resource_version: str = ""
    items: tuple[dict[str, Any], ...] = ()

    @property
    def name(self) -> str:
        return str(self.object.get("metadata", {}).get("name", ""))


class Informer:
    """List, then watch one kind; see the module docstring.

    ``client`` gives the connection and resolves the kind's URL (discovery); a callable giving
    the client is called again at every relist (a registered cluster's credentials may have
    changed). Tests give ``http`` and ``path`` instead. ``prepare`` runs (off the loop) before
    every list: e.g. install the CRD of the kind; its failures count like the list's.
    ``relist_every`` (seconds) relists when a watch request ends after that long since the last
    list: a periodic resync for a controller that compares with state outside the API server.
    ``retry_unreachable=False`` raises a transient failure before the
    first list succeeded (the caller's retries decide whether a never-reached server is worth
    waiting for); once the server answered, transient failures are always backed off.
    ``resource_version`` starts with a watch from that version instead of a list (a caller that
    wants every change since a version it saw): no ``SYNCED`` comes first, but one does if the
    version is gone (410) and the kind is relisted.
    """

    def __init__(
        self,
        client: KubeClient | Callable[[], KubeClient] | None,
        api_version: str,
        kind: str,
        *,
        namespace: str | None = None,
        label_selector: Selector | str | None = None,
        field_selector: str | None = None,
        watch_timeout: int = WATCH_TIMEOUT,
        backoff: Backoff = WATCH_BACKOFF,
        retry_unreachable: bool = True,
        retry_not_served: bool = False,
        http: httpx.AsyncClient | None = None,
        path: str | None = None,
        context: str = "",
        prepare: Callable[[], None] | None = None,
        relist_every: float | None = None,
        resource_version: str = "",
    ) -> None:
        self.client = client
        self.prepare = prepare
        self.relist_every = relist_every
        self.api_version, self.kind, self.namespace = api_version, kind, namespace
        self.label_selector = str(label_selector) if label_selector is not None else None
        self.field_selector = field_selector
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.retry_unreachable, self.retry_not_served = retry_unreachable, retry_not_served
        self._http, self._path = http, path
        self.context = context or ("" if client is None or callable(client) else client.context)
        self.resource_version = resource_version  # the last one seen (list, event or bookmark)
        self.last_error = ""  # the last transient failure, one line; "" after a success
        self.lists = 0
        self.watches = 0

    @property
    def what(self) -> str:
        selectors = ",".join(s for s in (self.label_selector, self.field_selector) if s)
        where = f" in namespace {self.namespace}" if self.namespace else ""
        kind = self.kind if self.api_version in ("v1", "") else f"{self.kind} ({self.api_version})"
        return f"{kind}{f' [{selectors}]' if selectors else ''}{where} of {self.context}"

    async def _endpoint(self) -> tuple[httpx.AsyncClient, str]:
        if self._http is None or self._path is None:
            source = self.client
            if source is None:
                raise TypeError("an Informer needs a client, or http and path")

            def resolve() -> tuple[httpx.AsyncClient, str]:
                client = source() if callable(source) else source
                self.context = client.context  # named in errors, the lookup's own too
                path = client.resource(self.api_version, self.kind).path(namespace=self.namespace)
                return client.http, str(path)

            http, path = await asyncio.to_thread(resolve)
            self._http, self._path = http, path
            return http, path
        return self._http, self._path

    def _params(self) -> dict[str, str]:
        params = {}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        if self.field_selector:
            params["fieldSelector"] = self.field_selector
        return params

    async def list(self) -> tuple[list[dict[str, Any]], str]:
        """One list: (items, resourceVersion); ``prepare`` first."""
        if self.prepare is not None:
            await asyncio.to_thread(self.prepare)
        if callable(self.client):
            self._forget_endpoint()  # the client is looked up again at every list
        http, path = await self._endpoint()
        self.lists += 1
        body = await get_json(http, path, self._params(), f"list {self.what}")
        version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        return list(body.get("items") or []), version

    async def events(self) -> AsyncIterator[Event]:
        """Events until cancelled (the clean stop: the open watch is closed), or until a
        permanent failure or a spent backoff budget raises."""
        delays = self.backoff.delays()
        not_served = NOT_SERVED_BACKOFF.delays()
        reached = False  # the server answered a list or a watch
        progress = bool(self.resource_version)  # since the last list; a given version's 410 relists at once
        loop = asyncio.get_running_loop()
        listed_at = loop.time()
        while True:
            try:
                if self.relist_every is not None and loop.time() - listed_at >= self.relist_every:
                    self.resource_version = ""  # a periodic resync
                if not self.resource_version:
                    items, self.resource_version = await self.list()
                    listed_at = loop.time()
                    reached, progress, self.last_error = True, False, ""
                    not_served.reset()
                    yield Event(SYNCED, resource_version=self.resource_version, items=tuple(items))
                started = loop.time()
                delivered = False
                http, path = await self._endpoint()
                params = {
                    **self._params(),
                    "watch": "1",
                    "resourceVersion": self.resource_version,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": str(self.watch_timeout),
                }
                self.watches += 1
                async for kind, obj in watch_lines(
                    http, path, params, self.watch_timeout, f"watch {self.what}"
                ):
                    version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
                    self.resource_version = version or self.resource_version
                    delivered = progress = reached = True
                    delays.reset()
                    self.last_error = ""
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        yield Event(kind, obj, self.resource_version)  # type: ignore[arg-type]
                elapsed = loop.time() - started
                if not delivered and elapsed < self.watch_timeout / 2:
                    # A server that ends watches at once would make this a hot loop.
                    raise APIUnavailableError(f"watch {self.what}: ended after {elapsed:.1f}s")
                reached = True
                delays.reset()  # a watch that lasted its time: resume from where it was
            except APIGoneError:
                log.info("%s: resourceVersion %s is gone (410); relisting", self.what, self.resource_version)
                self.resource_version = ""
                if not progress:  # gone again with nothing in between: not at full speed
                    await self._pause(delays, f"watch {self.what}: 410 Gone twice in a row")
            except APINotFoundError as exc:
                if not self.retry_not_served:
                    raise
                self.resource_version = ""
                self._forget_endpoint()
                delay = not_served.next() or NOT_SERVED_BACKOFF.cap
                if not_served.failures == 1:
                    log.info("%s is not served (yet): waiting for its CRD", self.what)
                log.debug("%s not served (yet); looking again in %.1fs", self.what, delay)
                self.last_error = _one_line(exc)
                await asyncio.sleep(delay)
            except TemporaryError as exc:
                # A server that answered (a 503 while its storage initialises, a 429) is waited
                # for; one that cannot be reached at all, before any answer, may be the caller's.
                if not reached and not self.retry_unreachable and exc.status is None:
                    raise
                self.last_error = _one_line(exc)
                await self._pause(delays, self.last_error, exc)

    async def _pause(self, delays: Any, why: str, exc: Exception | None = None) -> None:
        delay = delays.next()
        if delay is None:
            if exc is not None:
                raise exc
            raise APIUnavailableError(f"watch {self.what}: {why}; backoff budget spent")
        version = self.resource_version
        where = f"resuming from resourceVersion {version}" if version else "relisting"
        log.warning("%s; %s in %.1fs", why, where, delay)
        await asyncio.sleep(delay)

    def _forget_endpoint(self) -> None:
        if self.client is not None:
            self._path = None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
