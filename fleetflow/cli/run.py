"""``fleetflow run FLOW ...``, the platform's processes, and ``fleetflow show addons|databases``.

Each run starts the flow in this process (against ``PREFECT_API_URL``, or a temporary local
Prefect server when unset), prints what it did, and exits non-zero with the reason on failure.
Prefect's run logs stay in the Prefect UI unless ``-v`` is given (see :mod:`fleetflow.cli.runlogs`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fleetflow import config
from fleetflow.cli import options
from fleetflow.cli.output import (
    JSON,
    YAML,
    Column,
    add_output_option,
    progress,
    render_list,
    serialize,
    table,
)
from fleetflow.errors import FleetflowError, UsageError
from fleetflow.labels import Selector, validate_dns_label
from fleetflow.registry import connect

SERVER_STARTUP_TIMEOUT = 120  # seconds; a cold start migrates a new SQLite database (~15 s on 2 busy cores)


@contextmanager
def prefect_server(flow: str) -> Iterator[None]:
    """Run ``flow`` against ``PREFECT_API_URL``, or, when it is unset, a temporary local server.

    Prefect would start an ephemeral server by itself, but leave ``PREFECT_API_URL`` unset, so a
    flow that emits fleetflow events did its work and then failed ("no Prefect server
    configured"). The temporary server is started here and named in ``PREFECT_API_URL`` for
    this run only; its database is kept in ``$FLEETFLOW_HOME/prefect-cli/`` (runs stay readable,
    and the next start skips the migrations). No automation listens there: say so.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        get_current_settings,
        temporary_settings,
    )

    if get_current_settings().api.url:
        yield
        return
    if api_url := os.environ.get("PREFECT_API_URL"):
        # Named after Prefect's settings were loaded (``fleetflow up`` learns its server's address
        # only once it has started it): Prefect reads the environment once, so name it here.
        with temporary_settings({PREFECT_API_URL: api_url}):
            yield
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    database = config.home() / "prefect-cli" / "prefect.db"
    database.parent.mkdir(parents=True, exist_ok=True)
    with temporary_settings({PREFECT_SERVER_DATABASE_CONNECTION_URL: f"sqlite+aiosqlite:///{database}"}):
        server = SubprocessASGIServer()
        try:
            server.start(timeout=SERVER_STARTUP_TIMEOUT)
        except Exception as exc:  # a port race, a timeout, a broken database: one line, and what to do
            server.stop()
            raise FleetflowError(
                f"no PREFECT_API_URL, and a temporary Prefect server did not start ({type(exc).__name__}); "
                "set PREFECT_API_URL"
            ) from None
        progress(
            f"no PREFECT_API_URL: running {flow} on a temporary Prefect server at {server.api_url} "
            f"(runs kept in {database}; its events reach no automation)"
        )
        try:
            with temporary_settings({PREFECT_API_URL: server.api_url}):
                try:
                    yield
                finally:  # the run's logs and Prefect's own events, before the server goes away
                    APILogWorker.drain_all(timeout=10)
                    EventsWorker.drain_all(timeout=10)
        finally:
            server.stop()


CLUSTER_HELP = "registered name of the cluster"


def _flow(parser: argparse.ArgumentParser) -> None:
    """The options of a command that runs a flow in this process."""
    options.add_cluster_options(parser)
    options.add_verbose(parser)
    parser.set_defaults(runs_flows=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run a flow now: install-operator, provision-database, ...")
    flows = run.add_subparsers(dest="flow", required=True, metavar="FLOW")

    op = flows.add_parser("install-operator", help="install CloudNativePG on clusters matching a selector")
    op.add_argument(
        "--selector",
        "-l",
        default="type=services",
        help="label selector of the clusters (default: %(default)s)",
    )
    op.add_argument("--chart", default="cloudnative-pg", help="chart name, oci:// reference or local path")
    op.add_argument("--repo", default="https://cloudnative-pg.github.io/charts", help="chart repository URL")
    op.add_argument("--version", default="0.22.1", help="chart version")
    op.add_argument(
        "--local-chart",
        action="store_true",
        help="use the operator chart the local fleet recorded (the real operator's with nodes, else the "
        "stand-in's)",
    )
    _flow(op)
    op.set_defaults(func=_install_operator)

    prov = flows.add_parser("provision-database", help="provision the database of CLUSTER and wait for it")
    prov.add_argument("cluster", metavar="CLUSTER", help=CLUSTER_HELP + " that asks for the database")
    prov.add_argument("--instances", type=int, default=3, help="PostgreSQL instances (default: %(default)s)")
    prov.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for readiness")
    prov.add_argument("--templates", help="directory of templates overriding the defaults")
    _flow(prov)
    prov.set_defaults(func=_provision)

    fetch = flows.add_parser("fetch-credentials", help="deliver CLUSTER's database credentials")
    fetch.add_argument("cluster", metavar="CLUSTER", help=CLUSTER_HELP + " whose database it is")
    fetch.add_argument(
        "--deliver-to",
        choices=["mgmt", "workload"],
        default="mgmt",
        help="the cluster's namespace in the management cluster (default) or the workload cluster itself",
    )
    _flow(fetch)
    fetch.set_defaults(func=_fetch)

    app = flows.add_parser("deploy-app", help="apply the todo-table Job on CLUSTER (labelled type=app)")
    app.add_argument(
        "cluster", nargs="?", metavar="CLUSTER", help=CLUSTER_HELP + " (default: every type=app one)"
    )
    app.add_argument("--templates", help="directory of templates overriding the defaults")
    _flow(app)
    app.set_defaults(func=_deploy)

    deploy = sub.add_parser(
        "deploy", help="create or update the deployments and automations (PREFECT_API_URL)"
    )
    deploy.add_argument(
        "--local-chart",
        action="store_true",
        help="automations install the operator chart the local fleet recorded",
    )
    deploy.add_argument(
        "--deletion-policy",
        choices=["Retain", "Delete"],
        default="Retain",
        help="when a cluster no longer has postgres=required: keep the database (default) or delete it",
    )
    deploy.add_argument(
        "--work-pool",
        metavar="NAME",
        help="also point the deployments at this Prefect work pool (type process; created if missing), "
        "so that 'prefect worker start --pool NAME' runs them",
    )
    deploy.set_defaults(func=_deploy_platform)

    executor = sub.add_parser(
        "executor", help="run the deployments' flow runs here, started within a second (PREFECT_API_URL)"
    )
    executor.add_argument("--name", help="this executor's name (default: the host name); unique per home")
    executor.add_argument("--concurrency", type=int, default=16, help="flow runs at once (default 16)")
    executor.add_argument("--poll", type=float, default=10.0, help="seconds between fallback polls")
    executor.add_argument("--grace", type=float, default=60.0, help="seconds to finish runs on SIGTERM")
    executor.add_argument("--deploy", action="store_true", help="apply deployments and automations first")
    executor.add_argument("--local-chart", action="store_true", help="as for deploy")
    executor.add_argument(
        "--deletion-policy", choices=["Retain", "Delete"], default="Retain", help="as for deploy"
    )
    options.add_cluster_options(executor)
    executor.set_defaults(func=_executor)

    api = sub.add_parser("api", help="serve the webhook API (POST/DELETE/GET /v1/databases, /healthz)")
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    api.add_argument("--port", type=int, default=8089, help="port to listen on (default: %(default)s)")
    options.add_cluster_options(api)
    api.set_defaults(func=_serve_api)

    show = sub.add_parser("show", help="show addons or databases")
    what = show.add_subparsers(dest="what", required=True, metavar="WHAT")
    addons = what.add_parser("addons", help="what install-operator installed where")
    add_output_option(addons)
    options.add_cluster_options(addons)
    addons.set_defaults(func=_show_addons)
    dbs = what.add_parser("databases", help="each requesting cluster's database (never a password)")
    add_output_option(dbs)
    options.add_cluster_options(dbs)
    dbs.set_defaults(func=_show_databases)


def _install_operator(args: argparse.Namespace) -> int:
    Selector.parse(args.selector)
    params: dict[str, Any] = {
        "selector": args.selector,
        "chart": args.chart,
        "repository": args.repo,
        "version": args.version,
        "mgmt_context": args.mgmt_context,
    }
    from fleetflow.flows.install_operator import install_operator

    params.update(_chart(args.local_chart) or {})
    with prefect_server("install-operator"):
        results = install_operator(**params)
    for r in results:
        print(
            f"{r['cluster']}: helm release {r['namespace']}/{r['release']} {r['chart']} {r['version']} "
            f"{'installed' if r['changed'] else 'unchanged'}"
        )
    if not results:
        print(f"no registered cluster matches {args.selector}")
    return 0


def _provision(args: argparse.Namespace) -> int:
    from fleetflow.flows.provision_database import provision_database

    validate_dns_label(args.cluster, "cluster name")
    with prefect_server("provision-database"):
        r = provision_database(
            cluster=args.cluster,
            instances=args.instances,
            timeout_seconds=args.timeout,
            template_dir=args.templates,
            mgmt_context=args.mgmt_context,
        )
    print(
        f"database {r['namespace']}/{r['name']} for {r['cluster']} ready on {r['service_cluster']} "
        f"at {r['endpoint']}"
    )
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from fleetflow.flows.fetch_credentials import fetch_credentials

    validate_dns_label(args.cluster, "cluster name")
    with prefect_server("fetch-credentials"):
        r = fetch_credentials(
            cluster=args.cluster, deliver_to=args.deliver_to, mgmt_context=args.mgmt_context
        )
    print(
        f"credentials for {r['cluster']} {'written to' if r['changed'] else 'already current in'} "
        f"{r['target']} (endpoint {r['endpoint']})"
    )
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from fleetflow.flows.deploy_app import deploy_app

    if args.cluster:
        validate_dns_label(args.cluster, "cluster name")
    with prefect_server("deploy-app"):
        results = deploy_app(
            cluster=args.cluster, template_dir=args.templates, mgmt_context=args.mgmt_context
        )
    for r in results:
        print(f"{r['cluster']}: job {r['job']} {r['job_outcome']}")
    if not results:
        print("no registered cluster is labelled type=app")
    return 0


def _show_addons(args: argparse.Namespace) -> int:
    from fleetflow.databases.operator import Addon, addons

    columns: list[Column[Addon]] = [
        Column("CLUSTER", lambda a: f"{a.cluster}/{a.cluster}"),
        Column("RESOURCE TYPE", lambda a: a.kind),
        Column("NAMESPACE", lambda a: a.namespace),
        Column("NAME", lambda a: a.name),
        Column("VERSION", lambda a: a.version),
        Column("TIME", lambda a: a.time),
        Column("INSTALLED BY", lambda a: a.by),
    ]

    def as_dict(a: Addon) -> dict[str, Any]:
        return {
            "kind": "Addon",
            "cluster": a.cluster,
            "type": a.kind,
            "namespace": a.namespace,
            "name": a.name,
            "version": a.version,
            "time": a.time,
            "installedBy": a.by,
        }

    entries = addons(connect(args.mgmt_context, args.kubeconfig).mgmt)
    print(render_list(entries, args.output, columns, as_dict, "No addons installed."))
    return 0


def _show_databases(args: argparse.Namespace) -> int:
    """The label path's database of each cluster, then every Database request; what cannot be
    read is named on stderr and the exit code is 1 (as kubectl's: what could be read on stdout)."""
    from fleetflow.cli.db import database_object, read_requests, request_table
    from fleetflow.databases.inventory import RequestRow
    from fleetflow.databases.overview import rows

    registry = connect(args.mgmt_context, args.kubeconfig)
    found = rows(registry)
    requested, unread_requests = read_requests(registry)
    unread = [r.cluster for r in found if not r.complete] + [r.request for r in unread_requests]
    if args.output in (JSON, YAML):
        items = [
            {
                "kind": "ClusterDatabase",
                "cluster": r.cluster,
                "serviceCluster": r.service_cluster,
                "phase": r.phase,
                "endpoint": r.endpoint,
                "credentials": r.credentials,
            }
            for r in found
        ] + [database_object(cluster, obj) for cluster, obj in requested]
        print(serialize({"kind": "List", "items": items}, args.output))
    else:
        print(
            table(
                ["CLUSTER", "SERVICE CLUSTER", "PHASE", "ENDPOINT", "CREDENTIALS"],
                [[r.cluster, r.service_cluster, r.phase, r.endpoint, r.credentials] for r in found],
            )
            if found
            else "No cluster requests a database."
        )
        asked = sorted(
            [RequestRow.of(cluster, obj) for cluster, obj in requested] + unread_requests,
            key=lambda r: r.request,
        )
        print("\nDatabase requests:\n" + request_table(asked) if asked else "\nNo Database requests.")
    if unread:
        print(f"error: could not read everything about {', '.join(unread)} (reasons above)", file=sys.stderr)
        return 1
    return 0


def _chart(local: bool) -> dict[str, Any] | None:
    """The operator chart recorded in fleetflow's settings (the local fleet records the real
    operator's or its stand-in's there), else None: CloudNativePG's published chart.
    ``--local-chart`` insists on the former."""
    chart = config.operator_chart()
    if local and chart is None:
        raise UsageError(
            f"--local-chart: no operator chart is recorded in {config.settings_file()}; "
            "start the local fleet first ('fleetflow fleet up')"
        )
    return {"chart": chart, "repository": None, "version": None} if chart else None


def _deploy_platform(args: argparse.Namespace) -> int:
    from fleetflow.deployments.work_pool import WorkPool
    from fleetflow.events import require_api

    pool = None if args.work_pool is None else WorkPool.for_repair(args.work_pool, config.repair_interval())
    api = require_api()
    from fleetflow.deployments.platform import apply_all

    ids = apply_all(_chart(args.local_chart), args.deletion_policy, pool)
    print(f"{len(ids)} deployments and their automations applied to {api}")
    if pool is not None:
        print(f"work pool {pool.name!r} (process): run them with 'prefect worker start --pool {pool.name}'")
    return 0


def _executor(args: argparse.Namespace) -> int:
    from fleetflow.events import require_api
    from fleetflow.executor.main import run

    require_api()
    code: int = run(
        name=args.name,
        concurrency=args.concurrency,
        poll_seconds=args.poll,
        grace_seconds=args.grace,
        deploy=args.deploy,
        operator_chart=_chart(args.local_chart),
        deletion_policy=args.deletion_policy,
    )
    return code


def _serve_api(args: argparse.Namespace) -> int:
    from fleetflow import config
    from fleetflow.cli.output import progress
    from fleetflow.webhook import TOKEN_ENV, load_or_create_token, serve

    token, path, created = load_or_create_token(config.home())
    mgmt = config.mgmt_context(args.mgmt_context)
    connect(
        mgmt, args.kubeconfig
    )  # fail now, with a clear message, if the management cluster is not configured
    where = (
        f"{'generated into' if created else 'read from'} {path}"
        if os.environ.get(TOKEN_ENV) is None
        else f"from {TOKEN_ENV}"
    )
    progress(f"webhook API on http://{args.host}:{args.port}/v1/databases; bearer token {where}")
    serve(args.host, args.port, lambda: connect(mgmt), token)
    return 0
