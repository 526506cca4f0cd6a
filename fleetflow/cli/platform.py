"""``fleetflow up``, ``down``, ``status`` and ``demo``: the whole platform.

``up`` starts the Prefect server, the executor, the watcher and the webhook API in the background
(with ``--local``, on the local fleet, its clusters registered with the labels the demo uses);
``demo`` then walks the whole chain on it as a user would, timing and checking each stage.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time

import fleetflow.supervisor as parts
from fleetflow import config
from fleetflow.cli import options, plugins
from fleetflow.cli.output import JSON, TABLE, YAML, Column, add_output_option, progress, render_list, table
from fleetflow.errors import FleetflowError, UsageError

LOCAL_LABELS = {"mgmt": {"type": "mgmt"}, "service-cluster": {"type": "services"}, "workload-cluster": {}}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser("up", help="start the platform in the background and return once it is ready")
    up.add_argument(
        "--local",
        action="store_true",
        help="also bring the local fleet up (the fleetflow-fleet plugin) and register its clusters: "
        "mgmt (type=mgmt), service-cluster (type=services) and workload-cluster",
    )
    up.add_argument("--webhook-port", type=int, default=0, help="webhook API port (default: a free one)")
    up.add_argument(
        "--prefect-db",
        metavar="sqlite|postgres|URL",
        default=None,
        help="the Prefect server's database: sqlite (the default), postgres (a PostgreSQL fleetflow runs "
        "under $FLEETFLOW_HOME/platform/prefect-db) or a postgresql+asyncpg:// URL of your own (a password "
        "can come from ~/.pgpass instead of the URL); remembered for the next up",
    )
    up.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops the platform")
    _cnpg_choice(up, default="standin")
    options.add_cluster_options(up)
    options.add_verbose(up)
    up.set_defaults(func=_up, runs_flows=True)
    down = sub.add_parser(
        "down",
        help="stop what 'fleetflow up' started, its PostgreSQL too (data kept); the local fleet with --local",
    )
    down.add_argument("--local", action="store_true", help="also stop the local fleet")
    down.set_defaults(func=_down)
    demo = sub.add_parser(
        "demo",
        help="the whole chain end to end on the local fleet: install the operator, ask for a database, "
        "label a cluster type=app, run the app against it; each stage timed and verified",
    )
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each stage")
    _cnpg_choice(demo, default="real")
    options.add_verbose(demo)
    demo.set_defaults(func=_demo, runs_flows=True)
    status = sub.add_parser("status", help="each part of the platform, the Prefect UI and the webhook URL")
    add_output_option(status)
    status.set_defaults(func=_status)


def _cnpg_choice(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--cnpg",
        choices=("real", "standin"),
        default=default,
        help="with --local: the real CloudNativePG operator on real nodes (needs root; minutes to "
        "provision), or the fast stand-in on nodeless clusters (default: %(default)s)",
    )


def _up(args: argparse.Namespace) -> int:
    env: dict[str, str] = {}
    if args.local and (getattr(args, "kubeconfig", None) or getattr(args, "mgmt_context", None)):
        raise UsageError(
            "--local uses the local fleet's kubeconfig and its mgmt context: leave out "
            "--kubeconfig and --context"
        )
    if args.local:
        fleet = ["up", "--clusters", ",".join(LOCAL_LABELS)]
        fleet += ["--nodes", "--cnpg", "real"] if args.cnpg == "real" else ["--cnpg", "standin"]
        if plugins.run("fleet", fleet) != 0:
            raise FleetflowError("the local fleet did not come up (see above)")
        env = {"KUBECONFIG": str(config.fleet_kubeconfig()), "FLEETFLOW_MGMT_CONTEXT": "mgmt"}
        os.environ.update(env)

    def enrol_mgmt(api_url: str) -> None:
        os.environ["PREFECT_API_URL"] = api_url
        if args.local:
            _register("mgmt")

    state = parts.up(
        progress,
        local_chart=args.local,
        webhook_port=args.webhook_port,
        env=env,
        prefect_db_choice=args.prefect_db,
        before_workers=enrol_mgmt,
    )
    if args.local:
        for name in list(LOCAL_LABELS)[1:]:
            _register(name)
    _status(args)
    token = config.home() / "api-token"
    print(
        f"\nPrefect UI: {state.api_url.removesuffix('/api')}\nWebhook API: "
        f"http://127.0.0.1:{state.webhook_port}/v1/databases (bearer token: $FLEETFLOW_API_TOKEN or {token})"
    )
    if args.foreground:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        parts.down(progress)
    return 0


def _register(name: str) -> None:
    from fleetflow.cli.run import prefect_server
    from fleetflow.flows.register_cluster import register_cluster
    from fleetflow.registry import connect

    registry = connect("mgmt")
    if name == "mgmt":
        registry.install()
        config.save_setting("mgmtContext", "mgmt")
    if registry.get(name) is None:
        with prefect_server("register-cluster"):  # the platform's server, named after Prefect loaded
            register_cluster(name=name, context=name, labels=LOCAL_LABELS[name], mgmt_context="mgmt")
        progress(f"registered {name} {LOCAL_LABELS[name] or ''}")


def _down(args: argparse.Namespace) -> int:
    parts.down(progress)
    if args.local and plugins.run("fleet", ["down"]) != 0:
        raise FleetflowError("the local fleet did not stop cleanly (see above)")
    return 0


PART_COLUMNS: list[Column[tuple[str, str, str]]] = [
    Column("PART", lambda r: r[0]),
    Column("STATUS", lambda r: r[1]),
    Column("ADDRESS", lambda r: r[2]),
]


def _status(args: argparse.Namespace) -> int:
    """The parts' table (or objects), then recent automation failures: on stdout under the
    table, on stderr when stdout holds JSON or YAML."""
    output = getattr(args, "output", TABLE)
    print(
        render_list(
            parts.status(),
            output,
            PART_COLUMNS,
            lambda r: {"kind": "PlatformPart", "name": r[0], "status": r[1], "address": r[2]},
            "No parts.",
        )
    )
    notes = sys.stderr if output in (JSON, YAML) else sys.stdout
    state = parts.load()
    if state.api_url:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from fleetflow.errors import TemporaryError
        from fleetflow.events import recent_failed_actions

        # Named here, not by the environment: Prefect may have read its settings already (a
        # process that just started the platform), and would then ask a temporary server.
        api_url = os.environ.get("PREFECT_API_URL") or state.api_url
        try:
            with temporary_settings({PREFECT_API_URL: api_url}):
                failures = recent_failed_actions()
        except TemporaryError as exc:
            print(f"\nautomation failures: unknown ({exc})", file=notes)
            return 0
        if failures:
            print(
                f"\n{len(failures)} automation action(s) failed in the last 24 h (newest first):", file=notes
            )
            for event in failures[:5]:
                reason = (event.get("payload") or {}).get("reason", "")
                automation = event["resource"].get("prefect.resource.name", "")
                print(f"  {event.get('occurred', '')[:19]}  {automation}: {reason[:160]}", file=notes)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fleetflow.cli import demo
    from fleetflow.registry import connect

    started = time.monotonic()
    args.local, args.webhook_port, args.foreground, args.prefect_db = True, 0, False, None
    _up(args)
    stages = [
        demo.Stage("platform up (fleet, Prefect, executor, watch, api)", time.monotonic() - started, "ready")
    ]
    stages += demo.run(connect("mgmt"), parts.load(), progress, args.timeout, real=args.cnpg == "real")
    print()
    print(table(["STAGE", "SECONDS", "RESULT"], [[s.name, f"{s.seconds:.1f}", s.result] for s in stages]))
    print(f"\nAll {len(stages)} stages verified. Prefect UI: {parts.load().api_url.removesuffix('/api')}")
    return 0
