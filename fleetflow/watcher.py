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

What to emit is decided by pure functions (:func:`changes` for one cluster, :func:`resync_changes`
for a whole listing) from what was last emitted and what is there now; :class:`LabelWatcher`
only feeds them, sends their events and persists the outcome.

A corrupt entry in the ConfigMap (hand-edited, truncated) is logged as a warning and treated as
never emitted: the cluster is announced again as registered (same event id, so Prefect drops a
duplicate), and the entry is rewritten, or removed if the cluster is gone. One bad value must
not stop every other cluster's events.

Listing, watching, resuming and relisting are the informer's (:mod:`fleetflow.kube.informer`),
on the process's one watch loop. Changes are handled in batches: whatever the informer has
delivered is diffed, emitted in one request and persisted in one patch. One change costs two
round trips; a burst of a hundred costs a few, instead of two hundred in a row. A relist is a
``SYNCED`` listing, diffed against the persisted state like a restart.

A Prefect server that cannot be reached (stopped, restarting) does not end the watch: the batch
is sent again, with a backoff of at most ``events.EMIT_BACKOFF_MAX`` seconds, while the informer
goes on queueing what changes meanwhile, and nothing is recorded as emitted before the server
accepted it; the registry is not relisted for it, so changes made during an outage are sent
as soon as the server is back.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fleetflow import events
from fleetflow.errors import APINotFoundError
from fleetflow.kube import KubeClient
from fleetflow.kube.hub import hub
from fleetflow.kube.informer import SYNCED, Event, Informer
from fleetflow.labels import LabelDiff
from fleetflow.registry import API_VERSION, KIND

log = logging.getLogger("fleetflow.watcher")

STATE_NAMESPACE = "fleetflow-system"
STATE_NAME = "label-watcher"
WATCH_TIMEOUT = 300
MAX_BATCH = 200  # changes emitted in one request at most


@dataclass(frozen=True)
class Emitted:
    """What the watcher last emitted for one cluster."""

    uid: str
    labels: dict[str, str]


_NONE = Emitted("", {})


@dataclass(frozen=True)
class Observed:
    """A cluster as it is now, from a list or a watch event."""

    uid: str
    labels: dict[str, str]
    resource_version: str = ""

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Observed:
        meta = obj["metadata"]
        return cls(meta["uid"], dict(meta.get("labels") or {}), meta.get("resourceVersion", ""))

    @property
    def emitted(self) -> Emitted:
        return Emitted(self.uid, self.labels)


def changes(name: str, before: Emitted | None, now: Observed | None) -> list[events.FleetEvent]:
    """The events that take a consumer from ``before`` (what was last emitted for cluster
    ``name``, None: nothing) to ``now`` (None: the cluster is gone). Pure: no I/O, no state."""
    if before is not None and (now is None or before.uid != now.uid):
        # Gone, or deleted and re-created while we were not looking.
        gone = events.FleetEvent(
            events.CLUSTER_DEREGISTERED,
            events.cluster_resource(name, before.labels),
            events.event_id(before.uid, "deregistered"),
            {"cluster": name, "labels": before.labels},
        )
        return [gone, *changes(name, None, now)]
    if now is None:
        return []
    if before is None:
        return [
            events.FleetEvent(
                events.CLUSTER_REGISTERED,
                events.cluster_resource(name, now.labels),
                events.event_id(now.uid, "registered"),
                {"cluster": name, "labels": now.labels},
            )
        ]
    diff = LabelDiff.between(before.labels, now.labels)
    if not diff:
        return []
    resource = events.cluster_resource(name, now.labels)
    # Prefect cannot match an absent label, so removals are named in the resource too.
    resource.update({f"fleetflow.label-removed.{k}": v for k, v in diff.removed.items()})
    return [
        events.FleetEvent(
            events.CLUSTER_LABELED,
            resource,
            events.event_id(now.uid, "labeled", now.resource_version),
            {
                "cluster": name,
                "added": diff.added,
                "changed": diff.changed,
                "removed": diff.removed,
                "labels": now.labels,
            },
        )
    ]


def resync_changes(
    before: Mapping[str, Emitted], now: Mapping[str, Observed]
) -> list[tuple[str, list[events.FleetEvent]]]:
    """Per cluster, the events that take a consumer from the snapshot ``before`` (what was last
    emitted) to the listing ``now``: listed clusters in listing order, then vanished ones by
    name. Clusters without events are left out."""
    names = [*now, *sorted(set(before) - set(now))]
    found = ((name, changes(name, before.get(name), now.get(name))) for name in names)
    return [(name, sent) for name, sent in found if sent]


def parse_entry(raw: object) -> Emitted:
    """One persisted entry; ValueError says why it cannot be used."""
    try:
        entry = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        raise ValueError("not valid JSON") from None
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    uid, labels = entry.get("uid"), entry.get("labels")
    if not isinstance(uid, str) or not uid:
        raise ValueError("no uid string")
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise ValueError("labels are not a mapping of strings")
    return Emitted(uid, dict(labels))


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
        self._stop: threading.Event | None = None  # set by run(): emitting is retried until then
        self._ready: threading.Event | None = None

    # -- persisted state -----------------------------------------------------------------
    def load_state(self) -> None:
        """Read what was last emitted, dropping anything diffed but not yet flushed."""
        cm = self.mgmt.get_or_none("v1", "ConfigMap", STATE_NAME, STATE_NAMESPACE)
        data = (cm or {}).get("data") or {}
        self.emitted, self._outbox, self._unsaved = {}, [], {}
        for name, raw in data.items():
            try:
                self.emitted[name] = parse_entry(raw)
            except ValueError as exc:
                log.warning(
                    "ConfigMap %s/%s key %r is corrupt (%s); treating cluster %r as never emitted",
                    STATE_NAMESPACE,
                    STATE_NAME,
                    name,
                    exc,
                    name,
                )
                self._unsaved[name] = None  # reset: rewritten by observe(), else removed

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
            self._emit_outbox()
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

    def _emit_outbox(self) -> None:
        """Send the outbox; while the watcher runs, a Prefect server that cannot be reached is
        tried again until it accepts (stopped meanwhile: the next start diffs again)."""
        if self._stop is None:
            self.emit(self._outbox)
        else:
            events.emit_until_accepted(self.emit, self._outbox, self._stop)

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
        name, now = obj["metadata"]["name"], Observed.of(obj)
        self._record(name, changes(name, self.emitted.get(name), now), now.emitted)

    def gone(self, name: str) -> None:
        self._record(name, changes(name, self.emitted.get(name), None), None)

    def _record(self, name: str, sent: list[events.FleetEvent], entry: Emitted | None) -> None:
        """Queue ``sent`` for the next flush and remember ``entry`` as emitted (if anything was)."""
        if sent:
            self._outbox.extend(sent)
            self._save(name, entry)

    # -- the loop ------------------------------------------------------------------------
    def resync(self) -> None:
        """Relist and emit every difference from what was last emitted."""
        items, version = self.mgmt.list(API_VERSION, KIND)
        self.synced(items, version)
        self.flush()
        log.info("synced %d clusters at resourceVersion %s", len(items), version)

    def synced(self, items: list[dict[str, Any]] | tuple[dict[str, Any], ...], version: str) -> None:
        """A complete listing: diff it against what was last emitted (persisted state)."""
        self.load_state()
        self.resource_version = version
        now = {obj["metadata"]["name"]: Observed.of(obj) for obj in items}
        for name, sent in resync_changes(self.emitted, now):
            self._record(name, sent, now[name].emitted if name in now else None)

    def handle(self, kind: str, obj: dict[str, Any]) -> None:
        self.resource_version = obj["metadata"].get("resourceVersion", self.resource_version)
        if kind in ("ADDED", "MODIFIED"):
            self.observe(obj)
        elif (
            kind == "DELETED"
            and self.emitted.get(obj["metadata"]["name"], _NONE).uid == obj["metadata"]["uid"]
        ):
            self.gone(obj["metadata"]["name"])

    def handle_batch(self, batch: list[Event]) -> None:
        """What the informer delivered since the last batch: diffed, emitted in one request and
        persisted in one patch."""
        listed: Event | None = None
        for event in batch:
            if event.type == SYNCED:
                self.synced(event.items, event.resource_version)
                listed = event
            else:
                self.handle(event.type, event.object)
        self.flush()
        if listed is not None:  # said once what it found is emitted
            log.info("synced %d clusters at resourceVersion %s", len(listed.items), listed.resource_version)
            if self._ready is not None:
                self._ready.set()

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Watch until ``stop`` is set (``ready`` once the first listing is emitted); transient
        failures back off inside the informer; a permanent one (a refused event) is raised."""
        self._stop, self._ready = stop, ready
        informer = Informer(self.mgmt, API_VERSION, KIND, watch_timeout=self.watch_timeout)
        watch = hub().watch(informer, self.handle_batch, name="label-watcher", max_batch=MAX_BATCH, stop=stop)
        try:
            stop.wait()
        finally:
            watch.stop()
        watch.join()
