"""Install the stand-in chart the way CloudNativePG's chart is installed: ``helm upgrade --install``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from fleetflow.errors import FleetError
from fleetflow_dev.cnpg.chart_build import chart_dir

RELEASE = "cnpg"
RELEASE_NAMESPACE = "cnpg-system"


def helm_argv(helm: Path, kubeconfig: Path, context: str) -> list[str]:
    """The command line; helm installs ``crds/`` on the first install and leaves it alone afterwards."""
    return [
        str(helm),
        "upgrade",
        "--install",
        RELEASE,
        str(chart_dir()),
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--kubeconfig",
        str(kubeconfig),
        "--kube-context",
        context,
        "--wait=false",
    ]


def install_chart(kubeconfig: Path, context: str, helm: Path | None = None, timeout: float = 180) -> str:
    """``helm upgrade --install cnpg <chart> -n cnpg-system`` on ``context``; returns helm's output.

    Idempotent: a second run upgrades the release to the same chart (a new revision).
    """
    if helm is None:
        from fleetflow_dev import binaries

        helm = binaries.ensure()["helm"]
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    try:
        proc = subprocess.run(
            helm_argv(helm, kubeconfig, context),
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise FleetError(
            f"helm did not install the CloudNativePG stand-in on {context} within {timeout:.0f}s"
        ) from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        raise FleetError(
            f"helm could not install the CloudNativePG stand-in on {context}: "
            f"{lines[-1] if lines else f'exit {proc.returncode}'}"
        )
    return proc.stdout
