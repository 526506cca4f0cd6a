"""Reading kubeconfig files: the one place that parses them.

Errors name the file and the context, never the file's content (it holds credentials).
"""

from __future__ import annotations

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
