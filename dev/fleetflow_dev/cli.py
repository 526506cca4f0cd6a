"""``fleetflow-fleet`` (run as ``fleetflow fleet ...``): bootstrap, up, status and down of the local fleet.

A plugin of the ``fleetflow`` command (see ``cli.plugins``): a process of its own, so the product
never imports development tooling. ``up`` records in fleetflow's settings the helm it built and the
CloudNativePG stand-in chart, which is how ``fleetflow up`` and the flows find them; ``down``
removes the chart again, so a stopped local fleet leaves no trace in how fleetflow installs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from fleetflow import config
from fleetflow.cli.output import progress, table
from fleetflow.errors import UsageError
from fleetflow_dev import binaries
from fleetflow_dev.manager import DEFAULT_CLUSTERS, Fleet, validate_names


def parser() -> argparse.ArgumentParser:
    fleet = argparse.ArgumentParser(
        prog="fleetflow fleet", description="The local fleet of real Kubernetes API servers (development)."
    )
    fleet.add_argument("--home", help="state directory (default: $FLEETFLOW_HOME, then ~/.fleetflow)")
    verbs = fleet.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    boot = verbs.add_parser(
        "bootstrap", help="build (or find) etcd, kube-apiserver, kube-controller-manager and helm"
    )
    boot.add_argument(
        "--assets",
        metavar="DIR",
        help="use prebuilt binaries from DIR (default: $KUBEBUILDER_ASSETS, then the cache)",
    )
    boot.add_argument(
        "--nodes",
        action="store_true",
        help="also build what nodes run: kubelet, kube-proxy, kube-scheduler, CoreDNS, CloudNativePG, images",
    )
    boot.set_defaults(func=_bootstrap)

    up = verbs.add_parser("up", help="start the local clusters (idempotent)")
    up.add_argument(
        "--clusters",
        default=",".join(DEFAULT_CLUSTERS),
        help="comma-separated cluster names (default: %(default)s)",
    )
    up.add_argument("--assets", metavar="DIR", help="as for bootstrap")
    up.add_argument(
        "--nodes",
        action="store_true",
        help="give each new cluster a real node (containerd, kubelet, kube-proxy, CoreDNS); needs root",
    )
    up.add_argument(
        "--cnpg",
        choices=("real", "standin"),
        help="CloudNativePG for install-operator: the real operator (default with --nodes) or the "
        "fast stand-in (default without)",
    )
    up.set_defaults(func=_up)

    load = verbs.add_parser("load-image", help="import an OCI image archive into every node")
    load.add_argument(
        "tarball",
        metavar="ARCHIVE",
        help="an OCI image archive (e.g. from 'skopeo copy ... oci-archive:FILE')",
    )
    load.set_defaults(func=_load_image)

    status = verbs.add_parser("status", help="show each local cluster's state and endpoint")
    status.set_defaults(func=_status)

    standin = verbs.add_parser("cnpg-standin", help=argparse.SUPPRESS)
    standin.add_argument("--kubeconfig", required=True)
    standin.add_argument("--clusters", required=True)
    standin.add_argument("--root", required=True)
    standin.set_defaults(func=_standin)

    down = verbs.add_parser("down", help="stop every process 'up' started; data is kept")
    down.set_defaults(func=_down)
    return fleet


def main(argv: Sequence[str] | None = None) -> int:
    from fleetflow.cli.main import execute

    return execute(parser(), argv)


def _record(found: binaries.Binaries) -> None:
    """Tell the product where helm is (unless it was told otherwise)."""
    if "helm" in found.paths:
        config.save_setting(config.HELM, str(found["helm"]))


def _bootstrap(args: argparse.Namespace) -> int:
    found = binaries.ensure(args.assets, progress, nodes=args.nodes)
    _record(found)
    from fleetflow_dev.cnpg.chart_build import chart_dir

    chart = chart_dir(progress)
    names = binaries.BINARIES + (binaries.NODE_BINARIES if args.nodes else ())
    rows = [[name, found.sources[name], str(found[name])] for name in names]
    rows.append(["cnpg-standin-chart", "CloudNativePG v1.24.1 CRD", str(chart)])
    if args.nodes:
        from fleetflow_dev.cnpg import operator_chart
        from fleetflow_dev.images import ensure_images

        rows.append(
            ["cnpg-operator-chart", "CloudNativePG v1.24.1 release", str(operator_chart.chart_dir(progress))]
        )
        rows += [
            [ref, "built from Debian and Go modules", str(path)]
            for ref, path in ensure_images(progress).items()
        ]
    print(table(["BINARY", "SOURCE", "PATH"], rows))
    return 0


def _up(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.clusters.split(",") if n.strip()]
    fleet = Fleet()
    validate_names(names)  # fail on a bad name before minutes of building
    # A fleet made with nodes keeps them: its clusters' Service ranges were made for them.
    nodes = args.nodes or fleet.has_nodes()
    standin = (args.cnpg or ("real" if nodes else "standin")) == "standin"
    if not nodes and not standin:
        raise UsageError("--cnpg real needs --nodes: the real operator runs in pods")
    found = binaries.ensure(args.assets, progress, nodes=nodes)
    started = time.monotonic()
    fleet.up(names, found, progress, standin=standin, nodes=nodes)
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


def _load_image(args: argparse.Namespace) -> int:
    from pathlib import Path

    tarball = Path(args.tarball)
    if not tarball.is_file():
        raise UsageError(f"{tarball}: no such file")
    Fleet().load_image(tarball, progress)
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

    from fleetflow_dev.cnpg import controller

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    controller.run(Path(args.kubeconfig), args.clusters.split(","), stop, Path(args.root))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
