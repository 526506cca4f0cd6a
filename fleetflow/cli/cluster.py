"""``fleetflow init``, ``fleetflow cluster ...`` and ``fleetflow watch``: the registry from a terminal.

Input is validated before anything runs, so a bad name or label costs nothing and writes
nothing. ``register`` runs the register-cluster flow; label edits and deregistration are
single API writes that the label watcher turns into events. ``list`` and ``get`` print a table,
or with ``-o json|yaml`` each cluster as an object to script against (never its credentials).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from fleetflow import config
from fleetflow.cli import options
from fleetflow.cli.output import (
    JSON,
    TABLE,
    YAML,
    Column,
    add_output_option,
    progress,
    render_list,
    serialize,
)
from fleetflow.errors import FleetflowError, UsageError
from fleetflow.labels import LabelEdit, Selector, parse, validate_dns_label
from fleetflow.registry import ClusterRecord, Registry, connect

NAME_HELP = "the cluster's registered name (also its namespace in the management cluster)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = sub.add_parser("init", help="install the registry in the management cluster and register it")
    options.add_cluster_options(init, required=True)
    init.add_argument("--name", help="registry name of the management cluster (default: the context name)")
    options.add_verbose(init)
    init.set_defaults(func=_init, runs_flows=True)

    cluster = sub.add_parser("cluster", help="register, list, get, label and deregister clusters")
    verbs = cluster.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    reg = verbs.add_parser("register", help="register a cluster (runs the register-cluster flow)")
    reg.add_argument("name", metavar="NAME", help=NAME_HELP)
    reg.add_argument(
        "--context", required=True, metavar="CONTEXT", help="kubeconfig context that reaches the cluster"
    )
    reg.add_argument("--labels", help="comma-separated key=value labels")
    reg.add_argument(
        "--probe-retries", type=int, default=3, help="retries for an unreachable cluster (default: 3)"
    )
    reg.add_argument(
        "--kubeconfig",
        dest="cluster_kubeconfig",
        metavar="FILE",
        help="kubeconfig file holding --context (default: $KUBECONFIG, then the local fleet's, then "
        "~/.kube/config); the management cluster is reached as for every other command",
    )
    reg.add_argument("--mgmt-context", metavar="CONTEXT", help=options.MGMT_CONTEXT_HELP)
    options.add_verbose(reg)
    reg.set_defaults(func=_register, runs_flows=True)

    ls = verbs.add_parser("list", aliases=["ls"], help="list registered clusters")
    ls.add_argument("-l", "--selector", default="", help="label selector, e.g. type=services")
    add_output_option(ls)
    options.add_cluster_options(ls)
    ls.set_defaults(func=_list, name=None)

    get = verbs.add_parser("get", help="one registered cluster by name (without NAME: as list)")
    get.add_argument("name", nargs="?", metavar="NAME", help=NAME_HELP)
    get.add_argument("-l", "--selector", default="", help="label selector, without NAME")
    add_output_option(get)
    options.add_cluster_options(get)
    get.set_defaults(func=_list)

    label = verbs.add_parser("label", help="add (k=v), overwrite (k=v) and remove (k-) labels")
    label.add_argument("name", metavar="NAME", help=NAME_HELP)
    label.add_argument(
        "changes",
        nargs="+",
        metavar="KEY=VALUE|KEY-",
        help="KEY=VALUE adds or overwrites the label KEY, KEY- removes it",
    )
    options.add_cluster_options(label)
    label.set_defaults(func=_label)

    dereg = verbs.add_parser(
        "deregister",
        help="apply the deletion policy of each Database request in the cluster, then remove the "
        "cluster and its stored kubeconfig",
    )
    dereg.add_argument("name", metavar="NAME", help=NAME_HELP)
    dereg.add_argument(
        "--force", action="store_true", help="deregister even if its Database requests cannot be released"
    )
    options.add_cluster_options(dereg)
    dereg.set_defaults(func=_deregister)

    watch = sub.add_parser("watch", help="emit Prefect events for registry changes until stopped")
    options.add_cluster_options(watch)
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
    connect(mgmt)  # a missing management context fails here, before Prefect starts
    if args.probe_retries < 0:
        raise UsageError("--probe-retries must be 0 or more")
    _run_register(args.name, args.context, args.cluster_kubeconfig, labels, mgmt, args.probe_retries)
    return 0


def _server(registry: Registry, name: str) -> str:
    """The API server URL of a registered cluster, read from its stored kubeconfig; empty if that
    cannot be read. Only the URL leaves this function, never the credentials beside it."""
    try:
        return registry.kubeconfig(name).server
    except FleetflowError:
        return ""


def cluster_object(record: ClusterRecord, server: str) -> dict[str, Any]:
    """A registered cluster as ``-o json|yaml`` prints it."""
    status = "Unknown" if record.ready is None else str(record.ready)
    return {
        "kind": "FleetCluster",
        "name": record.name,
        "namespace": record.namespace,
        "labels": dict(sorted(record.labels.items())),
        "ready": record.ready,
        "version": record.version,
        "server": server,
        "conditions": [
            {
                "type": "Ready",
                "status": status,
                "reason": record.reason,
                "message": record.message,
                "lastProbeTime": record.last_probe_time,
            }
        ],
        "created": record.created,
    }


def _columns(servers: dict[str, str]) -> list[Column[ClusterRecord]]:
    return [
        Column("NAMESPACE", lambda r: r.namespace),
        Column("NAME", lambda r: r.name),
        Column("READY", lambda r: r.ready),
        Column("VERSION", lambda r: r.version),
        Column("LABELS", lambda r: r.labels),
        Column("SERVER", lambda r: servers.get(r.name, ""), wide=True),
        Column("REASON", lambda r: r.reason, wide=True),
        Column("LAST PROBE", lambda r: r.last_probe_time, wide=True),
    ]


def _list(args: argparse.Namespace) -> int:
    """``cluster list`` and ``cluster get [NAME]``: a missing NAME is an error (exit 1)."""
    registry = connect(args.mgmt_context, args.kubeconfig)
    if args.name is not None:
        if args.selector:
            raise UsageError("a cluster NAME and --selector cannot be given together")
        validate_dns_label(args.name, "cluster name")
        records = [registry.require(args.name)]
    else:
        selector = Selector.parse(args.selector)
        records = [r for r in registry.list() if selector.matches(r.labels)]
    servers = {r.name: _server(registry, r.name) for r in records} if args.output != TABLE else {}
    if args.name is not None and args.output in (JSON, YAML):  # one object, as kubectl get NAME
        print(serialize(cluster_object(records[0], servers[records[0].name]), args.output))
        return 0
    empty = "No clusters registered." if not args.selector else f"No clusters match {args.selector}."
    print(
        render_list(
            records,
            args.output,
            _columns(servers),
            lambda r: cluster_object(r, servers.get(r.name, "")),
            empty,
        )
    )
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
    registry.require(args.name)  # a missing cluster: one line on stderr, exit 1
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
