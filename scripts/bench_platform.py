"""Measure the event-driven chain on a running local platform (``fleetflow up --local``).

For N fresh clusters, one at a time: label ``postgres=required`` and time
  1. label change -> database requested (the CNPG Cluster exists on the service cluster),
  2. database ready (Cluster healthy) -> credentials delivered (pg-credentials in mgmt).
Both are observed by polling every 50 ms. Prints medians. Run with FLEETFLOW_HOME pointing at
the platform's home: .venv/bin/python scripts/bench_platform.py [N]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fleetflow.fleet.manager import Fleet
from fleetflow.kube import Kubeconfig, client_for
from fleetflow.labels import LabelEdit
from fleetflow.registry import Registry


def until(check: Callable[[], object], timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(0.05)  # the measurement itself: poll at 50 ms
    raise SystemExit("timed out")


def main(count: int) -> None:
    kubeconfig = Fleet().kubeconfig_path
    registry = Registry(client_for("mgmt", kubeconfig))
    service = client_for("service-cluster", kubeconfig)
    requested, delivered = [], []
    for i in range(count):
        name = f"bench-{int(time.time())}-{i}"
        registry.ensure_namespace(name)
        registry.store_kubeconfig(name, Kubeconfig.from_file(Path(kubeconfig), "workload-cluster"))
        registry.apply(name, "workload-cluster", {})
        started = time.monotonic()
        registry.edit_labels(name, LabelEdit.parse(["postgres=required"]))
        created = until(
            lambda n=name: service.get_or_none("postgresql.cnpg.io/v1", "Cluster", f"cluster-{n}", n)
        )

        def healthy(n: str = name) -> bool:
            obj = service.get_or_none("postgresql.cnpg.io/v1", "Cluster", f"cluster-{n}", n) or {}
            return (obj.get("status") or {}).get("phase") == "Cluster in healthy state"

        ready = until(healthy)
        done = until(lambda n=name: registry.mgmt.get_or_none("v1", "Secret", "pg-credentials", n))
        requested.append(created - started)
        delivered.append(done - ready)
        print(
            f"{name}: requested after {created - started:.2f}s, credentials {done - ready:.2f}s after ready"
        )
    for label, values in (
        ("label change -> database requested", requested),
        ("database ready -> credentials delivered", delivered),
    ):
        print(
            f"{label}: median {statistics.median(values):.2f}s "
            f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
