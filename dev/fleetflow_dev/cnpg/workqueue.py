"""The stand-in's work queue: which Clusters to reconcile next, each at most once at a time.

Like client-go's workqueue: a key added while it waits is merged (one reconcile serves many
events), a key added while a worker holds it waits until :meth:`WorkQueue.done` (so no two
workers reconcile one Cluster at once, and the change that came meanwhile is not lost), and
a key may be added with a delay (a retry with backoff) without holding up any other key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[K, tuple[float, bool]] = {}  # key -> (due, force)
        self._active: set[K] = set()

    def add(self, key: K, *, force: bool = False, delay: float = 0.0) -> None:
        """Reconcile ``key`` after ``delay`` seconds (sooner if it is already due sooner)."""
        due = time.monotonic() + delay
        with self._cond:
            waiting = self._pending.get(key)
            if waiting is not None:
                due, force = min(due, waiting[0]), force or waiting[1]
            self._pending[key] = (due, force)
            self._cond.notify()

    def get(self, stop: threading.Event, poll: float = 1.0) -> tuple[K, bool] | None:
        """The next due key that no worker holds, and whether it is forced; None once ``stop`` is set.

        The caller holds the key until it calls :meth:`done`.
        """
        with self._cond:
            while not stop.is_set():
                now = time.monotonic()
                free = [(due, key) for key, (due, _) in self._pending.items() if key not in self._active]
                wait = poll
                if free:
                    due, key = min(free, key=lambda item: item[0])
                    if due <= now:
                        _, force = self._pending.pop(key)
                        self._active.add(key)
                        return key, force
                    wait = min(poll, due - now)
                self._cond.wait(wait)
        return None

    def done(self, key: K) -> None:
        with self._cond:
            self._active.discard(key)
            self._cond.notify_all()

    def wake(self) -> None:
        """Let waiting workers look at their stop event now."""
        with self._cond:
            self._cond.notify_all()

    def __len__(self) -> int:
        """Keys waiting or being worked on."""
        with self._cond:
            return len(self._pending.keys() | self._active)
