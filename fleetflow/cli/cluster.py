"""``fleetflow init``, ``fleetflow cluster ...`` and ``fleetflow watch``: the registry from a terminal.

Input is validated before anything runs, so a bad name or label costs nothing and writes
nothing. ``register`` runs the register-cluster flow; label edits and deregistration are
single API writes that the label watcher turns into events.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from fleetflow import config
from fleetflow.cli.output import progress, table
from fleetflow.errors import FleetflowError, UsageError
from fleetflow.labels import LabelEdit, Selector, parse, validate_dns_label
from fleetflow.registry import connect


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then the local fleet's)")
    parser.add_argument(
        "--mgmt-context",
        help=f"management cluster context (default: ${config.MGMT_CONTEXT_ENV}, "
        "then the one saved by 'fleetflow init')",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = sub.add_parser("init", help="install the registry in the management cluster and register it")
    init.add_argument("--mgmt-context", required=True, help="kubeconfig context of the management cluster")
    init.add_argument("--name", help="registry name of the management cluster (default: the context name)")
    init.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then the local fleet's)")
    init.set_defaults(func=_init)

    cluster = sub.add_parser("cluster", help="register, list, label and deregister clusters")
    verbs = cluster.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    reg = verbs.add_parser("register", help="register a cluster (runs the register-cluster flow)")
    reg.add_argument("name")
    reg.add_argument("--context", required=True, help="kubeconfig context that reaches the cluster")
    reg.add_argument("--labels", help="comma-separated key=value labels")
    reg.add_argument(
        "--probe-retries", type=int, default=3, help="retries for an unreachable cluster (default: 3)"
    )
    _common(reg)
    reg.set_defaults(func=_register)

    ls = verbs.add_parser("list", aliases=["ls", "get"], help="list registered clusters")
    ls.add_argument("-l", "--selector", default="", help="label selector, e.g. type=services")
    _common(ls)
    ls.set_defaults(func=_list)

    label = verbs.add_parser("label", help="add (k=v), overwrite (k=v) and remove (k-) labels")
    label.add_argument("name")
    label.add_argument("changes", nargs="+", metavar="KEY=VALUE|KEY-")
    _common(label)
    label.set_defaults(func=_label)

    dereg = verbs.add_parser(
        "deregister",
        help="apply the deletion policy of each Database request in the cluster, then remove the "
        "cluster and its stored kubeconfig",
    )
    dereg.add_argument("name")
    dereg.add_argument(
        "--force", action="store_true", help="deregister even if its Database requests cannot be released"
    )
    _common(dereg)
    dereg.set_defaults(func=_deregister)

    watch = sub.add_parser("watch", help="emit Prefect events for registry changes until stopped")
    _common(watch)
    watch.set_defaults(func=_watch)


def _init(args: argparse.Namespace) -> int:
    name = validate_dns_label(args.name or args.mgmt_context, "cluster name")
    registry = connect(args.mgmt_context, args.kubeconfig)
    registry.install()
    path = config.save_setting("mgmtContext", args.mgmt_context)
    progress(f"registry installed in {args.mgmt_context}; management context saved in {path}")
    _run_register(name, args.mgmt_context, args.kubeconfig, {"type": "mgmt"}, args.mgmt_context)
    return 0


def _run_register(
    name: str,
    context: str,
    kubeconfig: str | None,
    labels: dict[str, str] | None,
    mgmt_context: str | None,
    probe_retries: int = 3,
) -> None:
    from fleetflow.cli.run import prefect_server
    from fleetflow.flows.register_cluster import register_cluster

    with prefect_server("register-cluster"):
        result: dict[str, Any] = register_cluster(
            name=name,
            context=context,
            kubeconfig=kubeconfig,
            labels=labels,
            mgmt_context=config.mgmt_context(mgmt_context),
            probe_retries=probe_retries,
        )
    shown = ",".join(f"{k}={v}" for k, v in sorted(result["labels"].items())) or "<none>"
    print(
        f"cluster/{name} registered (ready={str(result['ready']).lower()}, "
        f"version={result['version']}, labels={shown})"
    )


def _register(args: argparse.Namespace) -> int:
    validate_dns_label(args.name, "cluster name")
    labels = parse(args.labels) if args.labels is not None else None
    mgmt = config.mgmt_context(args.mgmt_context)
    connect(mgmt, args.kubeconfig)  # a missing management context fails here, before Prefect starts
    if args.probe_retries < 0:
        raise UsageError("--probe-retries must be 0 or more")
    _run_register(args.name, args.context, args.kubeconfig, labels, mgmt, args.probe_retries)
    return 0


def _list(args: argparse.Namespace) -> int:
    selector = Selector.parse(args.selector)
    records = [r for r in connect(args.mgmt_context, args.kubeconfig).list() if selector.matches(r.labels)]
    if not records:
        print("No clusters registered." if not args.selector else f"No clusters match {selector}.")
        return 0
    rows = [
        [
            r.namespace,
            r.name,
            "" if r.ready is None else str(r.ready).lower(),
            r.version,
            ",".join(f"{k}={v}" for k, v in sorted(r.labels.items())) or "<none>",
        ]
        for r in records
    ]
    print(table(["NAMESPACE", "NAME", "READY", "VERSION", "LABELS"], rows))
    return 0


def _label(args: argparse.Namespace) -> int:
    validate_dns_label(args.name, "cluster name")
    edit = LabelEdit.parse(args.changes)
    before = connect(args.mgmt_context, args.kubeconfig).require(args.name)
    after = connect(args.mgmt_context, args.kubeconfig).edit_labels(args.name, edit)
    print(f"cluster/{args.name} {'labeled' if after.labels != before.labels else 'not labeled (no change)'}")
    return 0


def _deregister(args: argparse.Namespace) -> int:
    from fleetflow.databases.converge import release_cluster

    validate_dns_label(args.name, "cluster name")
    registry = connect(args.mgmt_context, args.kubeconfig)
    if registry.get(args.name) is None:
        print(f"cluster/{args.name} was not registered")
        return 1
    # Its Database requests first, while the cluster can still be reached through the registry.
    try:
        released = release_cluster(registry, args.name)
    except FleetflowError as exc:
        if not args.force:
            raise FleetflowError(
                f"cluster/{args.name} not deregistered: its Database requests could not be released "
                f"({exc}); --force deregisters without applying their deletion policies"
            ) from None
        progress(f"warning: Database requests of {args.name} not released: {exc}")
        released = []
    for outcome in released:
        print(f"database.fleetflow.io {outcome.request}: {outcome.detail}")
    registry.deregister(args.name)
    print(f"cluster/{args.name} deregistered")
    return 0


def _watch(args: argparse.Namespace) -> int:
    from fleetflow.databases.watcher import RequestWatcher
    from fleetflow.events import require_api
    from fleetflow.watcher import LabelWatcher

    require_api()
    registry = connect(args.mgmt_context, args.kubeconfig)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    ready = threading.Event()
    progress(f"watching FleetClusters and Database requests in {registry.mgmt.context}; Ctrl-C to stop")
    requests = threading.Thread(
        target=RequestWatcher(registry).run, args=(stop,), name="request-watcher", daemon=True
    )
    requests.start()
    try:
        LabelWatcher(registry.mgmt).run(stop, ready)
    except KeyboardInterrupt:
        progress("stopped")
    finally:
        stop.set()
    return 0
