"""Benchmark the event-driven chain on a running local platform (``fleetflow up --local``).

In one run it measures, on the local fleet:

1. sequential: for N fresh clusters, one at a time, label ``postgres=required`` and time
   label change -> CNPG Cluster applied on the service cluster, and
   database ready (Cluster healthy) -> credentials delivered (``pg-credentials`` in mgmt);
2. burst: M fresh clusters (FleetCluster objects applied with plain API calls, as a GitOps
   tool would) labelled within a fraction of a second; time from the first label until all M
   credentials are delivered, and check that each cluster got exactly one CNPG Cluster;
3. the platform's resident memory and its CPU while idle (its own processes: Prefect server
   and database, executor, watcher, webhook API; the fleet's API servers are reported apart).

Times come from Kubernetes watches on the service and management clusters, stamped as events
arrive. Prints medians and p95. Usage (FLEETFLOW_HOME = the platform's home):

    .venv/bin/python scripts/bench_platform.py [--sequential 10] [--burst 100] [--keep]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from fleetflow_dev.manager import Fleet

from fleetflow import config
from fleetflow.kube import KubeClient, Kubeconfig, client_for
from fleetflow.kube.hub import hub
from fleetflow.kube.informer import SYNCED, Event, Informer
from fleetflow.labels import LabelEdit
from fleetflow.registry import Registry
from fleetflow.supervisor import state as platform_state

CNPG = "postgresql.cnpg.io/v1"
HEALTHY = "Cluster in healthy state"


class Stamps:
    """First time each (namespace) was seen in a state, from a watch that never stops."""

    def __init__(self, client: KubeClient, api_version: str, kind: str, test: Callable[[dict], bool]) -> None:
        self.seen: dict[str, float] = {}
        self.changed = threading.Condition()
        informer = Informer(client, api_version, kind, watch_timeout=60)
        self.watch = hub().watch(informer, lambda batch: self._batch(batch, test), name=f"bench-{kind}")

    def _note(self, obj: dict, test: Callable[[dict], bool]) -> None:
        namespace = obj["metadata"].get("namespace", "")
        if namespace not in self.seen and test(obj):
            with self.changed:
                self.seen[namespace] = time.monotonic()
                self.changed.notify_all()

    def _batch(self, batch: list[Event], test: Callable[[dict], bool]) -> None:
        for event in batch:
            if event.type != "DELETED":
                for obj in event.items if event.type == SYNCED else (event.object,):
                    self._note(obj, test)

    def wait(self, names: list[str], timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not all(n in self.seen for n in names):
                left = deadline - time.monotonic()
                missing = [n for n in names if n not in self.seen]
                if left <= 0:
                    raise SystemExit(f"timed out: {len(missing)} of {len(names)} not reached: {missing[:3]}")
                self.changed.wait(left)
        return {n: self.seen[n] for n in names}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(label: str, values: list[float]) -> None:
    print(
        f"{label}: p50 {statistics.median(values):.2f}s  p95 {pct(values, 0.95):.2f}s  "
        f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"
    )


def enroll(registry: Registry, kubeconfig: Path, names: list[str]) -> None:
    config = Kubeconfig.from_file(kubeconfig, "workload-cluster")

    def one(name: str) -> None:
        registry.ensure_namespace(name)
        registry.store_kubeconfig(name, config)
        registry.apply(name, "workload-cluster", {})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, names))


def platform_processes() -> dict[str, psutil.Process]:
    """The platform's parts by name; a PostgreSQL fleetflow runs for Prefect counts as prefect-db."""
    found = {}
    for part, pid in platform_state.load().pids.items():
        try:
            found[part] = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
    db_dir = str(config.home() / "platform" / "prefect-db")
    for proc in psutil.process_iter(["cmdline"]):
        if "prefect-db" not in found and any(db_dir in arg for arg in proc.info["cmdline"] or []):
            found["prefect-db"] = proc  # the postmaster; its backends are its children
    return found


def tree_rss(proc: psutil.Process) -> int:
    procs = [proc, *proc.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs if p.is_running())


def tree_cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def resources(idle_seconds: float, settle_timeout: float = 180) -> None:
    procs = platform_processes()
    rss = {part: tree_rss(p) for part, p in procs.items()}
    print("resident memory: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in rss.items()))
    print(f"platform resident memory: {sum(rss.values()) / 2**20:.0f} MiB")
    # The server works off its backlog (task-run records, events) after a burst: wait until quiet.
    deadline = time.monotonic() + settle_timeout
    while time.monotonic() < deadline:
        before = sum(tree_cpu(p) for p in procs.values())
        time.sleep(2)  # a 2 s sample of the platform's CPU
        if (sum(tree_cpu(p) for p in procs.values()) - before) / 2 < 0.1:
            break
    before = {part: tree_cpu(p) for part, p in procs.items()}
    time.sleep(idle_seconds)  # the measurement window itself
    after = {part: tree_cpu(p) for part, p in procs.items()}
    used = {part: (after[part] - before[part]) / idle_seconds * 100 for part in procs}
    print(
        f"idle CPU over {idle_seconds:.0f}s: "
        + ", ".join(f"{k} {v:.1f}%" for k, v in used.items())
        + f"; platform {sum(used.values()):.1f}% of one core"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequential", type=int, default=10)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--idle", type=float, default=20, help="seconds of the idle CPU window")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark's clusters and databases")
    args = parser.parse_args()

    kubeconfig = Fleet().kubeconfig_path
    mgmt = client_for("mgmt", kubeconfig)
    service = client_for("service-cluster", kubeconfig)
    registry = Registry(mgmt)
    applied = Stamps(service, CNPG, "Cluster", lambda o: True)
    healthy = Stamps(service, CNPG, "Cluster", lambda o: (o.get("status") or {}).get("phase") == HEALTHY)
    delivered = Stamps(mgmt, "v1", "Secret", lambda o: o["metadata"]["name"] == "pg-credentials")
    run = uuid.uuid4().hex[:5]
    made: list[str] = []
    label = LabelEdit.parse(["postgres=required"])

    requested, credentials = [], []
    for i in range(args.sequential):
        name = f"bench-{run}-s{i}"
        enroll(registry, kubeconfig, [name])
        made.append(name)
        started = time.monotonic()
        registry.edit_labels(name, label)
        created = applied.wait([name], args.timeout)[name]
        ready = healthy.wait([name], args.timeout)[name]
        done = delivered.wait([name], args.timeout)[name]
        requested.append(created - started)
        credentials.append(done - ready)
        print(f"{name}: applied after {created - started:.2f}s, credentials {done - ready:.2f}s after ready")
    if requested:
        summary("label change -> CNPG Cluster applied", requested)
        summary("database ready -> credentials delivered", credentials)

    if args.burst:
        names = [f"bench-{run}-b{i}" for i in range(args.burst)]
        print(f"burst: enrolling {len(names)} clusters without labels ...")
        enroll(registry, kubeconfig, names)
        made += names
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda n: registry.edit_labels(n, label), names))
        labelled = time.monotonic() - started
        done = delivered.wait(names, args.timeout)
        total = [done[n] - started for n in names]
        print(f"burst of {len(names)}: labelled within {labelled:.2f}s")
        summary(f"burst of {len(names)}: label -> credentials delivered", total)
        print(f"burst of {len(names)}: all credentials delivered after {max(total):.1f}s")
        items, _ = service.list(CNPG, "Cluster")
        per = {n: 0 for n in names}
        for obj in items:
            if obj["metadata"]["namespace"] in per:
                per[obj["metadata"]["namespace"]] += 1
        wrong = {n: c for n, c in per.items() if c != 1}
        print(f"burst of {len(names)}: exactly one CNPG Cluster each: {wrong or 'yes'}")

    resources(args.idle)
    if not args.keep:
        for name in made:
            registry.deregister(name, delete_namespace=True)
            service.delete("v1", "Namespace", name)
        print(f"removed the benchmark's {len(made)} clusters and their databases")


if __name__ == "__main__":
    main()
