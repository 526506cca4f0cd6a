"""Measure: cluster label change -> Prefect event, median over N changes, on the local fleet.

Two figures per change: until the Prefect API accepted the event (what automations react to)
and until it is readable from /events/filter (the server stores events in batches).
Run: .venv/bin/python scripts/bench_label_events.py [N]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from fleetflow_dev import binaries
from fleetflow_dev.manager import Fleet
from prefect.client.orchestration import get_client
from prefect.testing.utilities import prefect_test_harness

from fleetflow import events
from fleetflow.kube import client_for
from fleetflow.labels import LabelEdit
from fleetflow.registry import Registry
from fleetflow.watcher import LabelWatcher


def stored(name: str, value: str) -> bool:
    body = {
        "filter": {
            "event": {"name": [events.CLUSTER_LABELED]},
            "resource": {"id": [f"fleetflow.cluster.{name}"]},
            "occurred": {"since": "2000-01-01T00:00:00Z"},
        },
        "limit": 50,
    }
    with get_client(sync_client=True) as client:
        found = client.request("POST", "/events/filter", json=body).json()["events"]
    return any(
        e["payload"]["changed"].get("step", {}).get("to") == value
        or e["payload"]["added"].get("step") == value
        for e in found
    )


def main(count: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="ff-bench-"))
    fleet = Fleet(home)
    fleet.up(["mgmt"], binaries.ensure(), print)
    try:
        with prefect_test_harness(server_startup_timeout=120):
            registry = Registry(client_for("mgmt", fleet.kubeconfig_path))
            registry.install()
            registry.ensure_namespace("bench")
            registry.apply("bench", "mgmt", {"type": "app"})
            accepted: dict[str, float] = {}

            def emit(event: events.FleetEvent) -> None:
                events.emit(event)
                step = event.payload.get("labels", {}).get("step")
                if step:
                    accepted[step] = time.monotonic()

            stop, ready = threading.Event(), threading.Event()
            thread = threading.Thread(
                target=LabelWatcher(registry.mgmt, emit, watch_timeout=5).run, args=(stop, ready)
            )
            thread.start()
            ready.wait(60)
            to_api, to_store = [], []
            for i in range(count):
                value = f"s{i}"
                started = time.monotonic()
                registry.edit_labels("bench", LabelEdit.parse([f"step={value}"]))
                deadline = started + 60
                while not stored("bench", value) and time.monotonic() < deadline:
                    time.sleep(0.05)  # polling the event store, the thing being measured
                to_store.append(time.monotonic() - started)
                to_api.append(accepted[value] - started)
            stop.set()
            thread.join()
    finally:
        fleet.down(print)
    for label, values in (("accepted by the Prefect API", to_api), ("readable in /events/filter", to_store)):
        print(
            f"label change -> event {label}: median {statistics.median(values):.3f}s, "
            f"min {min(values):.3f}s, max {max(values):.3f}s over {len(values)} changes"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
