"""The label watcher as a task: no retries of its own (it relists and backs off inside)."""

from __future__ import annotations

import threading

from prefect import task
from prefect.cache_policies import NO_CACHE

from fleetflow.registry import connect
from fleetflow.watcher import LabelWatcher


@task(name="run-label-watcher", persist_result=False, cache_policy=NO_CACHE)
def run_label_watcher(mgmt_context: str | None, stop: threading.Event) -> None:
    LabelWatcher(connect(mgmt_context).mgmt).run(stop)
