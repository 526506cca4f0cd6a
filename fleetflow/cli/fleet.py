"""``fleetflow fleet ...``: bootstrap, up, status and down of the local fleet."""

from __future__ import annotations

import argparse
import time

from fleetflow.cli.output import progress, table
from fleetflow.fleet import binaries
from fleetflow.fleet.manager import DEFAULT_CLUSTERS, Fleet, validate_names


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fleet = sub.add_parser("fleet", help="the local fleet of real Kubernetes API servers")
    verbs = fleet.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    boot = verbs.add_parser(
        "bootstrap", help="build (or find) etcd, kube-apiserver, kube-controller-manager and helm"
    )
    boot.add_argument(
        "--assets",
        metavar="DIR",
        help="use prebuilt binaries from DIR (default: $KUBEBUILDER_ASSETS, then the cache)",
    )
    boot.set_defaults(func=_bootstrap)

    up = verbs.add_parser("up", help="start the local clusters (idempotent)")
    up.add_argument(
        "--clusters",
        default=",".join(DEFAULT_CLUSTERS),
        help="comma-separated cluster names (default: %(default)s)",
    )
    up.add_argument("--assets", metavar="DIR", help="as for bootstrap")
    up.set_defaults(func=_up)

    status = verbs.add_parser("status", help="show each local cluster's state and endpoint")
    status.set_defaults(func=_status)

    standin = verbs.add_parser("cnpg-standin", help=argparse.SUPPRESS)
    standin.add_argument("--kubeconfig", required=True)
    standin.add_argument("--clusters", required=True)
    standin.add_argument("--root", required=True)
    standin.set_defaults(func=_standin)

    down = verbs.add_parser("down", help="stop every process 'up' started; data is kept")
    down.set_defaults(func=_down)


def _bootstrap(args: argparse.Namespace) -> int:
    found = binaries.ensure(args.assets, progress)
    rows = [[name, found.sources[name], str(found[name])] for name in binaries.BINARIES]
    print(table(["BINARY", "SOURCE", "PATH"], rows))
    return 0


def _up(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.clusters.split(",") if n.strip()]
    fleet = Fleet()
    validate_names(names)  # fail on a bad name before minutes of building
    found = binaries.ensure(args.assets, progress)
    started = time.monotonic()
    fleet.up(names, found, progress)
    progress(f"fleet ready in {time.monotonic() - started:.1f}s")
    print(fleet.kubeconfig_path)
    return 0


def _status(args: argparse.Namespace) -> int:
    statuses = Fleet().status()
    if not statuses:
        print("No local clusters. Start them with: fleetflow fleet up")
        return 0
    print(
        table(
            ["NAME", "STATUS", "ENDPOINT", "DETAIL"],
            [[s.name, s.state, s.endpoint, s.detail] for s in statuses],
        )
    )
    return 0


def _down(args: argparse.Namespace) -> int:
    Fleet().down(progress)
    return 0


def _standin(args: argparse.Namespace) -> int:
    """Run the local CloudNativePG stand-in until SIGTERM (started by ``fleet up``)."""
    import logging
    import signal
    import threading
    from pathlib import Path

    from fleetflow.fleet.cnpg import controller

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    controller.run(Path(args.kubeconfig), args.clusters.split(","), stop, Path(args.root))
    return 0
