"""One process running the node controllers of every cluster that has a node.

For each cluster: the local-path volume provisioner (:mod:`fleetflow_dev.nodes.storage`) and the
LoadBalancer address allocator (:mod:`fleetflow_dev.nodes.loadbalancer`). ``fleetflow fleet up
--nodes`` starts it as::

    python -m fleetflow_dev.nodes.controllers --kubeconfig FILE --clusters name:index,... --root DIR

and it prints ``node controllers: serving`` once every controller has set up and every watch
has listed; SIGTERM (or SIGINT) stops it.

Each (cluster, controller) runs as the CloudNativePG stand-in does (``fleetflow_dev.cnpg``): an
informer per watched kind (:mod:`fleetflow.kube.informer`, on the process's one watch loop: list,
watch from the list's resourceVersion, resume, relist on 410 Gone, back off, a full relist every
few minutes) only queues keys; one worker thread reconciles from a
:class:`~fleetflow_dev.cnpg.workqueue.WorkQueue` (so a key queued many times is reconciled once,
never twice at once), level-triggered from the live objects. A failure is logged and its key
queued again with the platform's backoff (:mod:`fleetflow.backoff`); a watch that fails for good
is started again; nothing ends the loop but ``stop``.

Every API call has a deadline: :class:`fleetflow.kube.KubeClient` passes no request timeout
to the client library, so :class:`BoundedClient` runs each call in a daemon thread and gives up
waiting after :data:`CALL_TIMEOUT` (an APIUnavailableError, retried like any other). The
informers' requests have timeouts of their own (:mod:`fleetflow.kube.transport`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from fleetflow.backoff import Backoff, Delays, retry
from fleetflow.errors import APIUnavailableError, FleetflowError
from fleetflow.kube import KubeClient, client_for
from fleetflow.kube.hub import Watch, hub
from fleetflow.kube.informer import SYNCED, Event, Informer
from fleetflow.kube.types import FIELD_MANAGER, Body, Propagation
from fleetflow.labels import Selector
from fleetflow_dev.cnpg.workqueue import WorkQueue
from fleetflow_dev.nodes.addresses import NodeAddresses
from fleetflow_dev.nodes.loadbalancer import LoadBalancers
from fleetflow_dev.nodes.storage import Storage

log = logging.getLogger("fleetflow.nodes")

SERVING = "node controllers: serving"
CALL_TIMEOUT = 20.0  # seconds one API call may take
WATCH_TIMEOUT = 5  # seconds per watch request (then resumed; a stop closes it at once)
RESYNC_SECONDS = 300.0  # full relist (and reconcile of everything) per watched kind
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
SETUP_BACKOFF = Backoff(first=BACKOFF_FIRST, cap=BACKOFF_MAX)  # a controller's setup until it works
RECONCILE_BACKOFF = Backoff(first=BACKOFF_FIRST, cap=BACKOFF_MAX)  # one key's failed reconciles
WATCH_RESTART_BACKOFF = Backoff(first=BACKOFF_FIRST, cap=BACKOFF_MAX)  # a watch that failed for good

T = TypeVar("T")


class Controller(Protocol):
    """What :class:`Loop` runs: :class:`~fleetflow_dev.nodes.storage.Storage`, :class:`LoadBalancers`."""

    name: str
    watches: tuple[tuple[str, str], ...]  # (apiVersion, kind) listed and watched

    def setup(self, client: KubeClient) -> None: ...

    def keys(self, kind: str, obj: dict[str, Any]) -> list[Hashable]: ...

    def reconcile(self, client: KubeClient, key: Hashable) -> float | None:
        """Make ``key`` true from the live objects; raises on failure. A number: look again then."""
        ...


def _bounded(call: Callable[[], T], what: str, timeout: float) -> T:
    """``call()``'s result, or an APIUnavailableError after ``timeout`` s (the call is abandoned)."""
    outcome: list[Any] = []
    done = threading.Event()

    def target() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed to the caller's thread
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=target, name=f"call: {what[:40]}", daemon=True).start()
    if not done.wait(timeout):
        raise APIUnavailableError(f"{what}: no answer within {timeout:.0f}s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


class BoundedClient(KubeClient):
    """A :class:`KubeClient` whose every call gives up after ``timeout`` seconds."""

    def __init__(self, inner: KubeClient, timeout: float = CALL_TIMEOUT) -> None:
        super().__init__(inner.api, inner.context)
        self.inner = inner
        self.timeout = timeout

    def _call(self, what: str, call: Callable[[], T]) -> T:
        return _bounded(call, f"{what} in {self.context}", self.timeout)

    def apply(
        self, body: Body | dict[str, Any], *, force: bool = False, field_manager: str = FIELD_MANAGER
    ) -> dict[str, Any]:
        return self._call(
            "apply", lambda: KubeClient.apply(self, body, force=force, field_manager=field_manager)
        )

    def apply_status(self, body: Body | dict[str, Any], *, force: bool = False) -> dict[str, Any]:
        return self._call("apply status", lambda: KubeClient.apply_status(self, body, force=force))

    def create(self, body: Body | dict[str, Any]) -> dict[str, Any]:
        return self._call("create", lambda: KubeClient.create(self, body))

    def merge_patch(
        self, api_version: str, kind: str, name: str, namespace: str | None, patch: dict[str, Any]
    ) -> dict[str, Any]:
        return self._call(
            f"patch {kind}", lambda: KubeClient.merge_patch(self, api_version, kind, name, namespace, patch)
        )

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return self._call(f"get {kind}", lambda: KubeClient.get(self, api_version, kind, name, namespace))

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: Selector | str | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        return self._call(
            f"list {kind}", lambda: KubeClient.list(self, api_version, kind, namespace, label_selector)
        )

    def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        propagation: Propagation = "Background",
    ) -> bool:
        return self._call(
            f"delete {kind}",
            lambda: KubeClient.delete(self, api_version, kind, name, namespace, propagation=propagation),
        )


@dataclass
class Loop:
    """One controller on one cluster: its watches, its queue and its worker."""

    cluster: str
    controller: Controller
    connect: Callable[[], KubeClient]
    watch_timeout: int = WATCH_TIMEOUT
    resync_seconds: float = RESYNC_SECONDS
    call_timeout: float = CALL_TIMEOUT
    queue: WorkQueue[Hashable] = field(default_factory=WorkQueue)
    ready: threading.Event = field(default_factory=threading.Event)
    _listed: set[str] = field(default_factory=set)
    _set_up: bool = False
    _backoff: dict[Hashable, Delays] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    _client: tuple[KubeClient, BoundedClient] | None = None

    @property
    def label(self) -> str:
        return f"{self.controller.name} on {self.cluster}"

    def client(self) -> BoundedClient:
        """The bounded client of the current kubeconfig (a restarted cluster may have a new port)."""
        try:
            inner = self.connect()
        except FleetflowError as exc:  # e.g. the kubeconfig being rewritten: keep the old client
            if self._client is None:
                raise
            log.warning("nodes: %s: cannot reconnect: %s", self.label, exc)
            return self._client[1]
        with self._guard:
            if self._client is None or self._client[0] is not inner:
                self._client = (inner, BoundedClient(inner, self.call_timeout))
            return self._client[1]

    def threads(self, stop: threading.Event) -> list[threading.Thread]:
        """The worker (not started); the watches are :meth:`start_watches`'."""
        name = f"{self.controller.name}-{self.cluster}"
        return [threading.Thread(target=self.work, args=(stop,), name=name, daemon=True)]

    def _mark(self, listed: str | None = None, set_up: bool = False) -> None:
        with self._guard:
            if listed:
                self._listed.add(listed)
            self._set_up = self._set_up or set_up
            if self._set_up and len(self._listed) == len(self.controller.watches):
                self.ready.set()

    # -- the worker ------------------------------------------------------------------------

    def work(self, stop: threading.Event) -> None:
        try:
            retry(
                f"nodes: {self.label}: setting up",
                lambda: self.controller.setup(self.client()),
                SETUP_BACKOFF,
                is_transient=lambda exc: True,  # a controller outlives its failures
                stop=stop,
            )
        except Exception:
            if not stop.is_set():
                raise
            return
        self._mark(set_up=True)
        while (item := self.queue.get(stop)) is not None:
            key, _ = item
            try:
                self.sync(key)
            finally:
                self.queue.done(key)

    def sync(self, key: Hashable) -> None:
        """Reconcile ``key``; a failure is logged and queued again with backoff, never raised."""
        try:
            again = self.controller.reconcile(self.client(), key)
        except Exception as exc:
            with self._guard:
                delay = self._backoff.setdefault(key, RECONCILE_BACKOFF.delays()).next() or BACKOFF_MAX
            log.warning("nodes: %s: %s: %s; retrying in %.1fs", self.label, key, _one_line(exc), delay)
            self.queue.add(key, delay=delay)
            return
        with self._guard:
            self._backoff.pop(key, None)
        if again is not None:
            self.queue.add(key, delay=again)

    # -- the watches -----------------------------------------------------------------------

    def start_watches(self) -> list[Watch]:
        """An informer per watched kind, on the process's watch loop, queueing every key of a
        listing and of each change; stopped by the caller."""
        return [
            hub().watch(
                Informer(
                    self.client,
                    api_version,
                    kind,
                    watch_timeout=self.watch_timeout,
                    retry_not_served=True,
                    relist_every=self.resync_seconds,
                ),
                partial(self._queue_batch, kind),
                name=f"{self.controller.name}-{self.cluster}-{kind}",
                restart=WATCH_RESTART_BACKOFF,
            )
            for api_version, kind in self.controller.watches
        ]

    def _queue_batch(self, kind: str, batch: list[Event]) -> None:
        for event in batch:
            for obj in event.items if event.type == SYNCED else (event.object,):
                for key in self.controller.keys(kind, obj):
                    self.queue.add(key)
            if event.type == SYNCED:
                self._mark(listed=kind)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def loops(kubeconfig: Path, clusters: dict[str, int], root: Path, **options: Any) -> list[Loop]:
    """The storage and LoadBalancer loops of every cluster (``name -> node index``)."""
    made = []
    for cluster, index in sorted(clusters.items()):
        pool = NodeAddresses(index).loadbalancer_pool()

        def connect(context: str = cluster) -> KubeClient:
            return client_for(context, kubeconfig)  # a new client only when the kubeconfig changed

        made.append(Loop(cluster, Storage(cluster, root, node=cluster), connect, **options))
        made.append(Loop(cluster, LoadBalancers(cluster, pool), connect, **options))
    return made


def run(
    kubeconfig: Path,
    clusters: dict[str, int],
    root: Path,
    stop: threading.Event,
    *,
    announce: Callable[[str], None] | None = None,
    **options: Any,
) -> None:
    """Serve every cluster's controllers until ``stop`` is set; announce :data:`SERVING` (on
    stdout unless ``announce`` is given) once each has set up and listed."""
    running = loops(kubeconfig, clusters, root.expanduser().absolute(), **options)
    threads = [t for loop in running for t in loop.threads(stop)]
    for thread in threads:
        thread.start()
    watches = [w for loop in running for w in loop.start_watches()]
    log.info(
        "nodes: controllers starting for %s", ", ".join(f"{c} ({i})" for c, i in sorted(clusters.items()))
    )
    announced = False
    while not stop.is_set():
        if not announced and all(loop.ready.is_set() for loop in running):
            (announce or _print)(SERVING)
            announced = True
        stop.wait(0.1 if not announced else 1.0)
    for watch in watches:
        watch.stop()
    for loop in running:
        loop.queue.wake()
    deadline = time.monotonic() + CALL_TIMEOUT
    for thread in threads:  # a call stuck past its deadline is abandoned (daemon threads)
        thread.join(max(0.0, deadline - time.monotonic()))
    log.info("nodes: controllers stopped")


def _print(line: str) -> None:
    print(line, flush=True)


def parse_clusters(text: str) -> dict[str, int]:
    """``name:index,name:index`` -> ``{name: index}``."""
    clusters: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, index = part.partition(":")
        if not sep or not name or not index.isdigit():
            raise argparse.ArgumentTypeError(f"{part!r} is not name:index")
        NodeAddresses(int(index))  # 1..99
        if name in clusters or int(index) in clusters.values():
            raise argparse.ArgumentTypeError(f"{part!r}: cluster or index given twice")
        clusters[name] = int(index)
    if not clusters:
        raise argparse.ArgumentTypeError("no cluster given")
    return clusters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fleetflow_dev.nodes.controllers",
        description="The local fleet's node controllers: local-path volumes and LoadBalancer addresses.",
    )
    parser.add_argument("--kubeconfig", type=Path, required=True, help="the fleet's kubeconfig")
    parser.add_argument("--clusters", type=parse_clusters, required=True, help="name:index,name:index,...")
    parser.add_argument("--root", type=Path, required=True, help="where volumes live: ROOT/<cluster>/volumes")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    stop = threading.Event()

    def stopping(signum: int, _frame: object) -> None:
        log.info("nodes: %s received; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    run(args.kubeconfig, args.clusters, args.root, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
