"""Reading kubeconfig files: the one place that parses them.

Errors name the file and the context, never the file's content (it holds credentials).
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

from fleetflow.errors import ConfigError


def load(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"kubeconfig {path} does not exist") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"kubeconfig {path} is not valid YAML ({type(exc).__name__})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("contexts"), list):
        raise ConfigError(f"kubeconfig {path} is malformed: no list of contexts")
    return raw


def contexts(path: Path) -> list[str]:
    """Names of the contexts in ``path``."""
    return [c["name"] for c in load(path)["contexts"] if isinstance(c, dict) and "name" in c]


def _embed(entry: dict[str, Any], base: Path, field: str) -> None:
    """Replace a file reference (``certificate-authority``) with its ``-data`` form."""
    ref = entry.pop(field, None)
    if ref and f"{field}-data" not in entry:
        path = Path(ref) if Path(ref).is_absolute() else base / ref
        try:
            entry[f"{field}-data"] = base64.b64encode(path.read_bytes()).decode()
        except OSError:
            raise ConfigError(f"kubeconfig refers to {field} file {path}, which cannot be read") from None


def _named(items: object, name: str, what: str, path: Path) -> dict[str, Any]:
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("name") == name and isinstance(item.get(what), dict):
            return copy.deepcopy(item)
    raise ConfigError(f"kubeconfig {path} is malformed: no {what} named {name!r}")


def extract(path: Path, context: str) -> dict[str, Any]:
    """A self-contained kubeconfig holding only ``context``, with file references embedded."""
    raw = load(path)
    ctx = next((c for c in raw["contexts"] if isinstance(c, dict) and c.get("name") == context), None)
    if ctx is None:
        names = ", ".join(str(c.get("name")) for c in raw["contexts"] if isinstance(c, dict))
        raise ConfigError(f"context {context!r} not found in kubeconfig {path}; it has: {names or 'none'}")
    spec = ctx.get("context") or {}
    if not isinstance(spec, dict) or not spec.get("cluster") or not spec.get("user"):
        raise ConfigError(f"kubeconfig {path} is malformed: context {context!r} lacks cluster or user")
    cluster = _named(raw.get("clusters"), spec["cluster"], "cluster", path)
    user = _named(raw.get("users"), spec["user"], "user", path)
    if not cluster["cluster"].get("server"):
        raise ConfigError(f"kubeconfig {path} is malformed: cluster {spec['cluster']!r} has no server")
    _embed(cluster["cluster"], path.parent, "certificate-authority")
    _embed(user["user"], path.parent, "client-certificate")
    _embed(user["user"], path.parent, "client-key")
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [user],
        "contexts": [{"name": context, "context": {**spec}}],
        "current-context": context,
    }


class Kubeconfig:
    """A self-contained, single-context kubeconfig held in memory.

    It holds credentials, so its ``repr`` and ``str`` never show them: a Kubeconfig that ends
    up in a log line, a traceback or a Prefect task's inputs shows only its context.
    """

    __slots__ = ("_data", "context")

    def __init__(self, data: dict[str, Any], context: str) -> None:
        self._data = data
        self.context = context

    @classmethod
    def from_file(cls, path: Path, context: str) -> Kubeconfig:
        return cls(extract(path, context), context)

    @classmethod
    def from_yaml(cls, text: str, origin: str) -> Kubeconfig:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"stored kubeconfig {origin} is not valid YAML") from None
        if not isinstance(data, dict) or not data.get("current-context"):
            raise ConfigError(f"stored kubeconfig {origin} has no current-context")
        return cls(data, str(data["current-context"]))

    @property
    def data(self) -> dict[str, Any]:
        return self._data

    @property
    def server(self) -> str:
        return str(self._data["clusters"][0]["cluster"]["server"])

    def to_yaml(self) -> str:
        return str(yaml.safe_dump(self._data, sort_keys=False))

    def __repr__(self) -> str:
        return f"Kubeconfig(context={self.context!r}, credentials=<hidden>)"

    __str__ = __repr__
