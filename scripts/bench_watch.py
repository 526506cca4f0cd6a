"""Measure: threads and resident memory of ``fleetflow watch`` with many registered clusters.

Brings up a local fleet without nodes (a management cluster and N workload clusters: etcd and
an API server each), registers every cluster (the management cluster too), starts a Prefect
server and ``fleetflow watch``, waits until every cluster's watches are established (the
request watch of each cluster has listed, and the label watcher has synced), then reads the
process's ``Threads`` and ``VmRSS`` from ``/proc/<pid>/status``.

Run: .venv/bin/python scripts/bench_watch.py [N]          (N workload clusters, default 8)
     .venv/bin/python scripts/bench_watch.py 8 --code DIR (run the watch from another checkout,
                                                           e.g. ``git worktree add DIR HEAD``)
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from fleetflow_dev import binaries
from fleetflow_dev.manager import Fleet
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from fleetflow.kube import client_for
from fleetflow.kube.kubeconfig import Kubeconfig
from fleetflow.registry import Registry

FLEETFLOW = str(Path(sys.executable).parent / "fleetflow")
# ``fleetflow`` from PYTHONPATH: the venv's editable install (a meta path finder) set aside.
FROM_CHECKOUT = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
from fleetflow.cli.main import main
sys.argv[0] = "fleetflow"
sys.exit(main())
"""
SETTLE = 10.0  # seconds after the last watch is established, for the secret and health watches


def status(pid: int) -> dict[str, str]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        found[key] = value.strip()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("clusters", nargs="?", type=int, default=8, help="workload clusters to register")
    parser.add_argument("--code", type=Path, help="a checkout whose fleetflow runs the watch")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the watches")
    args = parser.parse_args()

    names = ["mgmt", *(f"w{i}" for i in range(1, args.clusters + 1))]
    home = Path(tempfile.mkdtemp(prefix="ff-bench-watch-"))
    fleet = Fleet(home)
    started = time.monotonic()
    fleet.up(names, binaries.ensure(), lambda message: None, standin=False)
    print(f"fleet up: {len(names)} clusters in {time.monotonic() - started:.0f}s", flush=True)
    watch: subprocess.Popen[str] | None = None
    try:
        kubeconfig = fleet.kubeconfig_path
        registry = Registry(client_for("mgmt", kubeconfig))
        registry.install()
        for name in names:
            registry.ensure_namespace(name)
            registry.store_kubeconfig(name, Kubeconfig.from_file(kubeconfig, name))
            registry.apply(name, name, {"bench": "watch"})
        print(f"registered: {', '.join(names)}", flush=True)
        with prefect_test_harness(server_startup_timeout=120):
            env = dict(
                os.environ,
                KUBECONFIG=str(kubeconfig),
                FLEETFLOW_HOME=str(home),
                FLEETFLOW_MGMT_CONTEXT="mgmt",
                PREFECT_API_URL=str(PREFECT_API_URL.value()),
            )
            command = [FLEETFLOW, "watch"]
            if args.code:
                code = args.code.absolute()
                env["PYTHONPATH"] = os.pathsep.join([str(code), str(code / "dev")])
                command = [sys.executable, "-c", FROM_CHECKOUT, "watch"]
            watch = subprocess.Popen(
                command, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            lines: queue.Queue[str] = queue.Queue()

            saved = home / "watch.log"

            def pump(stream: Iterable[str]) -> None:
                with saved.open("w") as out:
                    for line in stream:
                        out.write(line)
                        out.flush()
                        lines.put(line)

            threading.Thread(target=pump, args=(watch.stdout,), daemon=True).start()
            listed: set[str] = set()
            labels_synced = False
            deadline = time.monotonic() + args.timeout
            while (len(listed) < len(names) or not labels_synced) and time.monotonic() < deadline:
                try:
                    line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if match := re.search(r" (\S+): \d+ Database request\(s\)", line):
                    listed.add(match.group(1))
                labels_synced = labels_synced or (
                    " synced " in line and "clusters at resourceVersion" in line
                )
            if len(listed) < len(names) or not labels_synced:
                raise SystemExit(f"watches not established in {args.timeout:.0f}s: listed {sorted(listed)}")
            established = time.monotonic()
            threading.Event().wait(SETTLE)  # the secret and health watches list right after
            info = status(watch.pid)
            print(
                f"fleetflow watch ({args.code or 'this checkout'}): {len(names)} registered clusters, "
                f"established in {established - started:.0f}s after fleet start",
                flush=True,
            )
            print(f"  Threads: {info['Threads']}", flush=True)
            print(f"  VmRSS:   {info['VmRSS']}", flush=True)
            print(f"  its output: {saved}", flush=True)
    finally:
        if watch is not None:
            watch.terminate()
            try:
                watch.wait(30)
            except subprocess.TimeoutExpired:
                watch.kill()
        fleet.down(lambda message: None)


if __name__ == "__main__":
    main()
