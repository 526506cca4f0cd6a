"""label-watcher as a Prefect flow: the same watcher as ``fleetflow watch``, run for a while."""

from __future__ import annotations

import threading

from prefect import flow

from fleetflow.tasks.watcher import run_label_watcher


@flow(name="watch-labels")
def watch_labels(mgmt_context: str | None = None, duration_seconds: float = 3600.0) -> None:
    """Emit cluster-label events for ``duration_seconds``, then stop (a schedule restarts it).

    Args:
        mgmt_context: the management cluster's context (default: fleetflow's configuration).
        duration_seconds: how long to watch in this run.
    """
    stop = threading.Event()
    timer = threading.Timer(duration_seconds, stop.set)
    timer.start()
    try:
        run_label_watcher(mgmt_context, stop)
    finally:
        timer.cancel()
