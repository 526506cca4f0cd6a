"""The platform's state file, ``$FLEETFLOW_HOME/platform/state.json``: what ``up`` started and where.

It holds no secrets: a database URL the user gave is kept in an owner-only file of its own
(:mod:`supervisor.prefect_db`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fleetflow import config
from fleetflow.files import write_atomic


@dataclass
class PlatformState:
    api_url: str = ""
    webhook_port: int = 0
    own_server: bool = False
    prefect_db: str = ""  # sqlite, postgres or url (see prefect_db); "" until the first up
    pids: dict[str, int] = field(default_factory=dict)
    markers: dict[str, str] = field(default_factory=dict)


def root() -> Path:
    return config.home() / "platform"


def _state_path() -> Path:
    return root() / "state.json"


def load() -> PlatformState:
    path = _state_path()
    if not path.exists():
        return PlatformState()
    known = {f.name for f in dataclasses.fields(PlatformState)}
    return PlatformState(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})


def save(state: PlatformState) -> None:
    root().mkdir(parents=True, exist_ok=True)
    write_atomic(_state_path(), json.dumps(asdict(state), indent=2))


def log(part: str) -> Path:
    return root() / "logs" / f"{part}.log"
