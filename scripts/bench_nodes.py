"""Measure the local fleet with real nodes: the seed's chain on the real operator, warm starts, memory.

1. ``--demo-runs N``: ``fleetflow demo`` (real nodes, real CloudNativePG) N times, each in a fresh
   ``FLEETFLOW_HOME`` with warm caches; reports per stage the median and p95, and "label to
   credentials" (the webhook's label, the Cluster applied, 3/3 instances ready, credentials
   delivered). After the last run it sums the resident memory of every process of the fleet and
   platform (control planes, nodes, shims and the PostgreSQL instances in their pods).
2. ``--warm-ups N``: ``fleetflow fleet up --nodes`` of the three clusters N times after ``fleet down``
   in one home (data, images and binaries kept); median and p95 of the wall time.

Run (as root): .venv/bin/python scripts/bench_nodes.py --demo-runs 3 --warm-ups 5
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

FLEETFLOW = str(Path(sys.executable).parent / "fleetflow")
LABEL_TO_CREDENTIALS = (
    "POST /v1/databases",
    "CNPG Cluster applied",
    "CNPG replicas ready",
    "database ready and credentials",
)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def run(home: Path, *args: str, timeout: float = 1800) -> str:
    env = dict(os.environ, FLEETFLOW_HOME=str(home))
    env.pop("KUBECONFIG", None)
    proc = subprocess.run(
        [FLEETFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"fleetflow {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def stages(output: str) -> dict[str, float]:
    table = output[output.index("STAGE") :].splitlines()[1:]
    found = {}
    for line in table:
        match = re.match(r"^(.+?)\s{2,}(\d+\.\d)\s{2,}", line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def fleet_memory(home: Path) -> tuple[float, int]:
    """MiB resident and process count of everything the fleet and platform run (by command line,
    and every descendant of the nodes' containerd shims)."""
    marker = str(home)
    total, count = 0, 0
    seen: set[int] = set()
    for process in psutil.process_iter(["cmdline", "memory_info", "name"]):
        try:
            line = " ".join(process.info["cmdline"] or [])
            if marker not in line and not (
                process.info["name"] == "containerd-shim-runc-v2" and "/run/fleetflow" in line
            ):
                continue
            family = [process]
            if process.info["name"] == "containerd-shim-runc-v2":
                family += process.children(recursive=True)
            for member in family:
                if member.pid not in seen:
                    seen.add(member.pid)
                    total += member.memory_info().rss
                    count += 1
        except psutil.Error:
            continue
    return total / 2**20, count


def bench_demo(runs: int) -> None:
    per_stage: dict[str, list[float]] = {}
    label_to_credentials: list[float] = []
    for index in range(runs):
        home = Path(tempfile.mkdtemp(prefix="ff-bench-nodes-"))
        try:
            output = run(home, "demo")
            measured = stages(output)
            for name, seconds in measured.items():
                per_stage.setdefault(name, []).append(seconds)
            chain = sum(s for n, s in measured.items() if n.startswith(LABEL_TO_CREDENTIALS))
            label_to_credentials.append(chain)
            print(f"run {index + 1}: label to credentials {chain:.1f}s", flush=True)
            if index == runs - 1:
                mib, count = fleet_memory(home)
                print(f"memory of the fleet and platform after the chain: {mib:.0f} MiB in {count} processes")
        finally:
            run(home, "down", "--local", timeout=300)
            shutil.rmtree(home, ignore_errors=True)
    print(f"\n{'STAGE':60} {'MEDIAN':>8} {'P95':>8}")
    for name, values in per_stage.items():
        print(f"{name:60} {statistics.median(values):8.1f} {p95(values):8.1f}")
    print(
        f"{'label to credentials (3 instances)':60} {statistics.median(label_to_credentials):8.1f} "
        f"{p95(label_to_credentials):8.1f}   ({runs} runs)"
    )


def bench_warm_up(count: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="ff-bench-warm-"))
    try:
        run(home, "fleet", "up", "--nodes")  # first start: images imported, certificates made
        times = []
        for _ in range(count):
            run(home, "fleet", "down", timeout=300)
            started = time.monotonic()
            run(home, "fleet", "up", "--nodes")
            times.append(time.monotonic() - started)
        print(
            f"warm fleet up --nodes (3 clusters): median {statistics.median(times):.1f}s, "
            f"p95 {p95(times):.1f}s, range {min(times):.1f}-{max(times):.1f}s over {count} runs"
        )
    finally:
        run(home, "fleet", "down", timeout=300)
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-runs", type=int, default=3)
    parser.add_argument("--warm-ups", type=int, default=5)
    args = parser.parse_args()
    if args.warm_ups:
        bench_warm_up(args.warm_ups)
    if args.demo_runs:
        bench_demo(args.demo_runs)


if __name__ == "__main__":
    main()
