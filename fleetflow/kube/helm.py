"""Helm releases on a registered cluster, with the real ``helm`` binary.

helm needs a kubeconfig file: the cluster's credentials are written to a private temporary
file (mode 0600) for the duration of one helm command and removed right after, so they never
outlive the call. Releases are compared before upgrading, so re-running with the same chart,
version and values changes nothing (no new revision).

A helm command that hangs (an unreachable registry, an API server that stopped answering) is
killed after :data:`HELM_TIMEOUT` and reported as a :class:`~fleetflow.errors.CommandTimeoutError`,
a temporary error the caller's retry handles like any other. A helm that cannot be run at all
(no such file, not executable) is a :class:`~fleetflow.errors.BootstrapError` naming its path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetflow.errors import APIUnavailableError, BootstrapError, CommandTimeoutError, PermanentError
from fleetflow.kube.kubeconfig import Kubeconfig

VALUES_ANNOTATION = "fleetflow.io/values-sha256"
HELM_TIMEOUT = 600.0  # seconds one helm command may take before it is killed


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    chart: str  # chart name
    version: str  # chart version
    app_version: str
    status: str
    revision: int
    changed: bool


@contextmanager
def _kubeconfig_file(kubeconfig: Kubeconfig) -> Iterator[Path]:
    fd, name = tempfile.mkstemp(prefix="fleetflow-helm-", suffix=".kubeconfig")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(kubeconfig.to_yaml())
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _run(helm: Path, args: list[str], kubeconfig: Path, context: str, what: str) -> str:
    argv = [str(helm), *args, "--kubeconfig", str(kubeconfig), "--kube-context", context]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=HELM_TIMEOUT)
    except subprocess.TimeoutExpired:
        # Its message quotes the whole argv (the kubeconfig's path among it): name the command only.
        raise CommandTimeoutError(f"helm {what} timed out after {HELM_TIMEOUT:g}s") from None
    except OSError as exc:
        # No binary there (or not executable): retrying cannot help, and the OSError would
        # escape fleetflow's error tree. Name the path and the fix, not the argv.
        raise BootstrapError(
            f"cannot run helm at {helm} ({exc.strerror or type(exc).__name__}): "
            "install helm on PATH or set FLEETFLOW_HELM to its path"
        ) from None
    if proc.returncode != 0:
        message = " ".join(proc.stderr.strip().splitlines()[-3:]) or f"exit {proc.returncode}"
        transient = any(
            w in message
            for w in (
                "connection refused",
                "i/o timeout",
                "TLS handshake timeout",
                "the server is currently unable",
                "etcdserver",
            )
        )
        cls = APIUnavailableError if transient else PermanentError
        raise cls(f"helm {what} failed: {message}")
    return proc.stdout


def values_digest(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def upgrade_install(
    helm: Path,
    kubeconfig: Kubeconfig,
    *,
    release: str,
    chart: str,
    namespace: str,
    version: str | None = None,
    repository: str | None = None,
    values: dict[str, Any] | None = None,
    timeout: str = "5m",
) -> Release:
    """``helm upgrade --install``, skipped when the same chart version and values are deployed."""
    values = values or {}
    digest = values_digest(values)
    with _kubeconfig_file(kubeconfig) as path:
        live = _current_with_values(helm, path, kubeconfig.context, release, namespace)
        if (
            live
            and live[0].get("status") == "deployed"
            and live[1] == (chart_identity(chart, version), digest)
        ):
            return _release(live[0], changed=False)
        args = [
            "upgrade",
            "--install",
            release,
            chart,
            "--namespace",
            namespace,
            "--create-namespace",
            # Installed means serving: an operator's admission webhooks refuse every object
            # of its kinds until its pods are Ready, so a request right after would fail.
            "--wait",
            "--timeout",
            timeout,
            "--description",
            f"{VALUES_ANNOTATION}={digest};chart={chart_identity(chart, version)}",
        ]
        if version and not Path(chart).exists():
            args += ["--version", version]
        if repository and not Path(chart).exists() and not chart.startswith("oci://"):
            args += ["--repo", repository]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(values, handle)
            values_file = handle.name
        try:
            _run(
                helm,
                [*args, "--values", values_file],
                path,
                kubeconfig.context,
                f"upgrade --install {release}",
            )
        finally:
            Path(values_file).unlink(missing_ok=True)
        after = _current_with_values(helm, path, kubeconfig.context, release, namespace)
    if after is None:
        raise PermanentError(f"helm installed {release} but does not list it in {namespace}")
    return _release(after[0], changed=True)


def chart_identity(chart: str, version: str | None) -> str:
    return f"{chart}@{version or 'latest'}"


def _current_with_values(
    helm: Path, path: Path, context: str, release: str, namespace: str
) -> tuple[dict[str, Any], tuple[str, str]] | None:
    out = _run(
        helm,
        ["list", "--namespace", namespace, "--filter", f"^{release}$", "--output", "json"],
        path,
        context,
        f"list {namespace}/{release}",
    )
    releases = json.loads(out or "[]")
    if not releases:
        return None
    history = json.loads(
        _run(
            helm,
            ["history", release, "--namespace", namespace, "--max", "1", "--output", "json"],
            path,
            context,
            f"history {release}",
        )
        or "[]"
    )
    description = history[-1].get("description", "") if history else ""
    fields = dict(part.split("=", 1) for part in description.split(";") if "=" in part)
    return releases[0], (fields.get("chart", ""), fields.get(VALUES_ANNOTATION, ""))


def _release(raw: dict[str, Any], *, changed: bool) -> Release:
    chart_full = str(raw.get("chart", ""))
    match = re.match(r"^(.+?)-(v?\d+\.\d+\.\d+.*)$", chart_full)
    name, version = (match.group(1), match.group(2)) if match else (chart_full, "")
    return Release(
        name=str(raw["name"]),
        namespace=str(raw["namespace"]),
        chart=name or chart_full,
        version=version,
        app_version=str(raw.get("app_version", "")),
        status=str(raw.get("status", "")),
        revision=int(raw.get("revision", 0)),
        changed=changed,
    )
