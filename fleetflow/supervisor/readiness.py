"""Wait until a freshly started etcd or kube-apiserver answers its health endpoint.

A process has no event that says "I am serving", so this polls its endpoint against a
deadline, and stops early with the process's own last log lines if it exits instead.
"""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from fleetflow.errors import FleetError

POLL_INTERVAL = 0.1


def tls_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    return context


def probe(url: str, context: ssl.SSLContext | None = None, timeout: float = 2.0) -> tuple[bool, str]:
    """(healthy, detail) for one GET of ``url``."""
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:  # noqa: S310
            body = response.read(512).decode(errors="replace")
            return response.status == 200, body.strip()
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(getattr(exc, "reason", exc))


def log_tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])


def wait_until(
    what: str, ready: Callable[[], bool], alive: Callable[[], bool], log: Path, timeout: float = 90.0
) -> None:
    """Poll ``ready`` until true; stop early with the log's last lines if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not alive():
            raise FleetError(f"{what} exited while starting; its log ({log}) ends: {log_tail(log)}")
        time.sleep(POLL_INTERVAL)
    raise FleetError(f"{what} did not become ready within {timeout:.0f}s; see {log}")


def wait_healthy(
    what: str,
    url: str,
    alive: Callable[[], bool],
    log: Path,
    context: ssl.SSLContext | None = None,
    timeout: float = 90.0,
) -> None:
    """Poll ``url`` until it answers 200; raise FleetError naming ``what`` otherwise."""
    wait_until(f"{what} at {url}", lambda: probe(url, context)[0], alive, log, timeout)
