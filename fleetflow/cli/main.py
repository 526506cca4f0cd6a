"""The ``fleetflow`` command: subcommands read like kubectl and sveltosctl.

Every error fleetflow raises on purpose ends here as one line on stderr and exit code 1 (a
missing object included); bad usage exits 2, as argparse does.
"""

from __future__ import annotations

import os

# Never phone home from a CLI run (this also keeps a closed network's errors out of the output).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import argparse
import sys
from collections.abc import Sequence

from fleetflow import __version__
from fleetflow.cli import cluster, completion, db, options, platform, plugins, run, runlogs
from fleetflow.errors import FleetflowError, UsageError


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="fleetflow",
        description="Event-driven Database-as-a-Service for Kubernetes fleets, on Prefect.",
    )
    root.add_argument("--version", action="version", version=f"fleetflow {__version__}")
    root.add_argument(
        "--home", metavar="DIR", help="state directory (default: $FLEETFLOW_HOME, then ~/.fleetflow)"
    )
    options.add_verbose(root, root=True)
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, description in plugins.KNOWN.items():
        plugin = sub.add_parser(name, help=description, add_help=False, prefix_chars="\0")
        plugin.add_argument(
            "plugin_args",
            nargs=argparse.REMAINDER,
            metavar="ARGS",
            help=f"the command line of {plugins.PREFIX}{name} (try: fleetflow {name} --help)",
        )
        plugin.set_defaults(func=lambda args, name=name: plugins.run(name, args.plugin_args))
    platform.register(sub)
    cluster.register(sub)
    run.register(sub)
    db.register(sub)
    completion.register(sub, root)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    return execute(parser(), argv)


def execute(command: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` with ``command`` and run it: a fleetflow error is one line on stderr and exit
    1 (2 for bad usage, 130 when interrupted). Plugins (``fleetflow-NAME``) end the same way."""
    args = command.parse_args(argv)
    options.apply(args)
    try:
        if getattr(args, "runs_flows", False):
            runlogs.configure(verbose=args.verbose)
        code: int = args.func(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FleetflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
