"""The label watcher: turns changes of FleetCluster objects into Prefect events, losing none.

It lists the registry, then watches from the list's resourceVersion. What it last emitted for
each cluster (uid and labels) is persisted in the management cluster, in the ConfigMap
``fleetflow-system/label-watcher``, after each emitted event. So:

- a restart compares the live registry with what was last emitted and emits what it missed
  while it was down (registrations, label changes, deregistrations) exactly once;
- a watch that ends normally resumes from the last resourceVersion; a ``410 Gone`` or a lost
  connection relists and diffs the same way;
- a crash between emitting and persisting re-emits the same event with the same id
  (uuid5 of uid and resourceVersion), which the Prefect server deduplicates.

Changes are handled in batches: a reader thread streams the watch into a queue, and whatever
has arrived is diffed, emitted in one request and persisted in one patch. One change costs two
round trips as before; a burst of a hundred costs a few, instead of two hundred in a row.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fleetflow import events
from fleetflow.errors import APIGoneError, APINotFoundError, TemporaryError
from fleetflow.kube import KubeClient
from fleetflow.labels import LabelDiff
from fleetflow.registry import API_VERSION, KIND

log = logging.getLogger("fleetflow.watcher")

STATE_NAMESPACE = "fleetflow-system"
STATE_NAME = "label-watcher"
WATCH_TIMEOUT = 30
MAX_BATCH = 200  # changes emitted in one request at most


@dataclass(frozen=True)
class Emitted:
    """What the watcher last emitted for one cluster."""

    uid: str
    labels: dict[str, str]


_NONE = Emitted("", {})

Emit = Callable[[list[events.FleetEvent]], None]


class LabelWatcher:
    def __init__(
        self, mgmt: KubeClient, emit: Emit = events.emit_many, watch_timeout: int = WATCH_TIMEOUT
    ) -> None:
        self.mgmt = mgmt
        self.emit = emit
        self.watch_timeout = watch_timeout
        self.emitted: dict[str, Emitted] = {}  # what is emitted, or will be by the next flush
        self.resource_version = ""
        self._outbox: list[events.FleetEvent] = []
        self._unsaved: dict[str, Emitted | None] = {}

    # -- persisted state -----------------------------------------------------------------
    def load_state(self) -> None:
        """Read what was last emitted, dropping anything diffed but not yet flushed."""
        cm = self.mgmt.get_or_none("v1", "ConfigMap", STATE_NAME, STATE_NAMESPACE)
        data = (cm or {}).get("data") or {}
        self.emitted, self._outbox, self._unsaved = {}, [], {}
        for name, raw in data.items():
            entry = json.loads(raw)
            self.emitted[name] = Emitted(entry["uid"], dict(entry["labels"]))

    def _save(self, name: str, entry: Emitted | None) -> None:
        self._unsaved[name] = entry
        if entry is None:
            self.emitted.pop(name, None)
        else:
            self.emitted[name] = entry

    def flush(self) -> None:
        """Emit what was diffed (one request), then persist it (one patch): nothing is recorded
        as emitted before the server accepted it."""
        if self._outbox:
            self.emit(self._outbox)
            for event in self._outbox:
                log.info(
                    "emitted %s for %s (id %s)", event.event, event.resource["prefect.resource.id"], event.id
                )
            self._outbox = []
        if self._unsaved:
            values = {
                name: None if e is None else json.dumps({"uid": e.uid, "labels": e.labels}, sort_keys=True)
                for name, e in self._unsaved.items()
            }
            patch = {"data": values}
            try:  # the ConfigMap is created only when it is missing
                self.mgmt.merge_patch("v1", "ConfigMap", STATE_NAME, STATE_NAMESPACE, patch)
            except APINotFoundError:
                self._create_state()
                self.mgmt.merge_patch("v1", "ConfigMap", STATE_NAME, STATE_NAMESPACE, patch)
            self._unsaved = {}

    def _create_state(self) -> None:
        managed = {"app.kubernetes.io/managed-by": "fleetflow"}
        self.mgmt.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": STATE_NAMESPACE, "labels": managed},
            }
        )
        self.mgmt.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": STATE_NAME, "namespace": STATE_NAMESPACE, "labels": managed},
            }
        )

    # -- diffing -------------------------------------------------------------------------
    def observe(self, obj: dict[str, Any]) -> None:
        """A cluster as it is now (from a list or a watch event)."""
        meta = obj["metadata"]
        name, uid, rv = meta["name"], meta["uid"], meta.get("resourceVersion", "")
        labels = dict(meta.get("labels") or {})
        known = self.emitted.get(name)
        if known is not None and known.uid != uid:
            self.gone(name)  # deleted and re-created while we were not looking
            known = None
        if known is None:
            self._send(
                events.FleetEvent(
                    events.CLUSTER_REGISTERED,
                    events.cluster_resource(name, labels),
                    events.event_id(uid, "registered"),
                    {"cluster": name, "labels": labels},
                )
            )
        else:
            diff = LabelDiff.between(known.labels, labels)
            if not diff:
                return
            resource = events.cluster_resource(name, labels)
            # Prefect cannot match an absent label, so removals are named in the resource too.
            resource.update({f"fleetflow.label-removed.{k}": v for k, v in diff.removed.items()})
            self._send(
                events.FleetEvent(
                    events.CLUSTER_LABELED,
                    resource,
                    events.event_id(uid, "labeled", rv),
                    {
                        "cluster": name,
                        "added": diff.added,
                        "changed": diff.changed,
                        "removed": diff.removed,
                        "labels": labels,
                    },
                )
            )
        self._save(name, Emitted(uid, labels))

    def gone(self, name: str) -> None:
        known = self.emitted.get(name)
        if known is None:
            return
        self._send(
            events.FleetEvent(
                events.CLUSTER_DEREGISTERED,
                events.cluster_resource(name, known.labels),
                events.event_id(known.uid, "deregistered"),
                {"cluster": name, "labels": known.labels},
            )
        )
        self._save(name, None)

    def _send(self, event: events.FleetEvent) -> None:
        self._outbox.append(event)

    # -- the loop ------------------------------------------------------------------------
    def resync(self) -> None:
        """Relist and emit every difference from what was last emitted."""
        self.load_state()
        items, self.resource_version = self.mgmt.list(API_VERSION, KIND)
        seen = set()
        for obj in items:
            seen.add(obj["metadata"]["name"])
            self.observe(obj)
        for name in sorted(set(self.emitted) - seen):
            self.gone(name)
        self.flush()
        log.info("synced %d clusters at resourceVersion %s", len(items), self.resource_version)

    def handle(self, kind: str, obj: dict[str, Any]) -> None:
        self.resource_version = obj["metadata"].get("resourceVersion", self.resource_version)
        if kind in ("ADDED", "MODIFIED"):
            self.observe(obj)
        elif (
            kind == "DELETED"
            and self.emitted.get(obj["metadata"]["name"], _NONE).uid == obj["metadata"]["uid"]
        ):
            self.gone(obj["metadata"]["name"])

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Watch until ``stop`` is set; transient failures back off and relist."""
        backoff = 0.5
        needs_resync = True
        while not stop.is_set():
            try:
                if needs_resync:
                    self.resync()
                    needs_resync = False
                    if ready is not None:
                        ready.set()
                self._watch(stop)
                backoff = 0.5
            except APIGoneError:
                log.info("watch expired (410 Gone); relisting")
                needs_resync = True
            except TemporaryError as exc:
                log.warning("%s; relisting in %.1fs", exc, backoff)
                needs_resync = True
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _watch(self, stop: threading.Event) -> None:
        """One watch request: a reader thread streams it; batches of what arrived are handled
        and flushed. Raises what the watch raised (410 Gone, connection errors)."""
        inbox: queue.Queue[tuple[str, dict[str, Any]] | BaseException | None] = queue.Queue()
        version = self.resource_version

        def read() -> None:
            try:
                for item in self.mgmt.stream(
                    API_VERSION, KIND, resource_version=version, timeout=self.watch_timeout
                ):
                    inbox.put(item)
                    if stop.is_set():
                        break
            except BaseException as exc:  # handed to the main loop, which relists
                inbox.put(exc)
                return
            inbox.put(None)

        threading.Thread(target=read, name="label-watch-reader", daemon=True).start()
        while True:
            batch = [inbox.get()]
            while len(batch) < MAX_BATCH and not isinstance(batch[-1], BaseException | None):
                try:
                    batch.append(inbox.get_nowait())
                except queue.Empty:
                    break
            for item in batch:
                if isinstance(item, tuple):
                    self.handle(*item)
            self.flush()
            end = batch[-1]
            if isinstance(end, BaseException):
                raise end
            if end is None or stop.is_set():
                return
