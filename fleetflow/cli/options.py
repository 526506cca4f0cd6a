"""The options every command that talks to a cluster shares, and the one place they take effect.

``--kubeconfig FILE`` and ``--context NAME`` read as kubectl's: the kubeconfig file, and the context
of the cluster the command talks to, which is the management cluster (``--mgmt-context`` is the
same option under its older name). ``cluster register`` talks to two clusters: its ``--context``
and ``--kubeconfig`` reach the cluster being registered, and ``--mgmt-context`` the management
cluster (through ``$KUBECONFIG``, as for every command without ``--kubeconfig``).

:func:`apply` writes the chosen values into the environment fleetflow's configuration reads
(``KUBECONFIG`` and ``FLEETFLOW_MGMT_CONTEXT``, see :mod:`fleetflow.config`) before the command
runs. Every layer then agrees on them: the registry, the flows and tasks a command runs in this
process, and the platform's processes ``fleetflow up`` starts.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fleetflow import config

KUBECONFIG_HELP = "kubeconfig file (default: $KUBECONFIG, then the local fleet's, then ~/.kube/config)"
MGMT_CONTEXT_HELP = (
    f"kubeconfig context of the management cluster (default: ${config.MGMT_CONTEXT_ENV}, "
    "then the one 'fleetflow init' saved)"
)


def add_kubeconfig(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", metavar="FILE", help=KUBECONFIG_HELP)


def add_cluster_options(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """``--kubeconfig`` and ``--context`` (alias ``--mgmt-context``) for the management cluster."""
    add_kubeconfig(parser)
    parser.add_argument(
        "--context",
        "--mgmt-context",
        dest="mgmt_context",
        metavar="CONTEXT",
        required=required,
        help="kubeconfig context of the management cluster"
        if required
        else MGMT_CONTEXT_HELP + "; --mgmt-context is the same option",
    )


def add_verbose(parser: argparse.ArgumentParser, *, root: bool = False) -> None:
    """``-v/--verbose``, on the root command and on each command that runs flows here, so that it
    can be given before or after the command's name."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if root else argparse.SUPPRESS,
        help="also print Prefect's flow and task run logs (they are always in the Prefect UI)",
    )


def apply(args: argparse.Namespace) -> None:
    """Make ``--home``, ``--kubeconfig`` and the management ``--context`` this process's
    configuration, and that of every process it starts."""
    if getattr(args, "home", None):
        os.environ["FLEETFLOW_HOME"] = args.home
    kubeconfig = getattr(args, "kubeconfig", None)
    if kubeconfig:
        os.environ["KUBECONFIG"] = str(Path(kubeconfig).expanduser().absolute())
    context = getattr(args, "mgmt_context", None)
    if context:
        os.environ[config.MGMT_CONTEXT_ENV] = context
