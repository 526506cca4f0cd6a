"""The Prefect server part: ``prefect server start`` on a loopback port, with a UI that reaches it.

The browser-side UI asks ``/ui-settings`` where the API is, and the server answers with
``PREFECT_UI_API_URL`` (default ``http://127.0.0.1:4200/api``): a server on any other port must
be told its own API address, or its UI says "Can't connect to Server API".
"""

from __future__ import annotations

import json
import sys
import urllib.request

from fleetflow import config
from fleetflow.supervisor import readiness


def port_of(api_url: str) -> str:
    return api_url.rsplit(":", 1)[1].split("/")[0]


def argv(api_url: str) -> list[str]:
    port = port_of(api_url)
    return [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", port]


def marker(api_url: str) -> str:
    """What the server's command line holds, so ``down`` recognises it."""
    return f"server start --host 127.0.0.1 --port {port_of(api_url)}"


def env(base: dict[str, str], api_url: str) -> dict[str, str]:
    return dict(
        base,
        PREFECT_HOME=str(prefect_home()),
        PREFECT_UI_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )


def prefect_home() -> str:
    return str(config.home() / "prefect")


def healthy(api_url: str) -> bool:
    return readiness.probe(f"{api_url}/health")[0]


def ui_url(api_url: str) -> str:
    return api_url.removesuffix("/api")


def ui_api_url(api_url: str) -> str | None:
    """The API address the server's UI is told to use (``GET /ui-settings``), or None if unanswered."""
    try:
        with urllib.request.urlopen(f"{ui_url(api_url)}/ui-settings", timeout=5) as response:  # noqa: S310
            return str(json.loads(response.read())["api_url"])
    except (OSError, ValueError, KeyError):
        return None
