"""Write the local fleet's kubeconfig: one cluster, user and context per local cluster.

Certificates are embedded so the file works from anywhere; it holds the admin key, so it is
written owner-only and atomically (never a half-written kubeconfig on disk).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from fleetflow.files import write_atomic


@dataclass(frozen=True)
class Entry:
    name: str
    server: str
    ca: Path
    cert: Path
    key: Path


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def render(entries: Iterable[Entry], current: str | None = None) -> dict[str, object]:
    entries = list(entries)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {
                "name": e.name,
                "cluster": {"server": e.server, "certificate-authority-data": _b64(e.ca)},
            }
            for e in entries
        ],
        "users": [
            {
                "name": f"{e.name}-admin",
                "user": {"client-certificate-data": _b64(e.cert), "client-key-data": _b64(e.key)},
            }
            for e in entries
        ],
        "contexts": [
            {"name": e.name, "context": {"cluster": e.name, "user": f"{e.name}-admin"}} for e in entries
        ],
        "current-context": current or (entries[0].name if entries else ""),
    }


def write(path: Path, entries: Iterable[Entry], current: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, yaml.safe_dump(render(entries, current), sort_keys=False), 0o600)
