"""Where fleetflow keeps its state, and which kubeconfig it uses.

All paths come from here so that tests can point the whole program somewhere else with two
environment variables: ``FLEETFLOW_HOME`` (state: the local fleet, tokens; default
``~/.fleetflow``) and ``XDG_CACHE_HOME`` (built binaries; default ``~/.cache``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fleetflow.errors import ConfigError
from fleetflow.files import write_atomic


def home() -> Path:
    """fleetflow's state directory."""
    value = os.environ.get("FLEETFLOW_HOME")
    return Path(value).expanduser() if value else Path.home() / ".fleetflow"


def cache_dir() -> Path:
    """Cache for binaries built from source, keyed by version below this directory."""
    base = os.environ.get("XDG_CACHE_HOME")
    root = Path(base).expanduser() if base else Path.home() / ".cache"
    return root / "fleetflow"


def fleet_dir() -> Path:
    return home() / "fleet"


def fleet_kubeconfig() -> Path:
    """The kubeconfig that ``fleetflow fleet up`` writes, one context per local cluster."""
    return fleet_dir() / "kubeconfig"


@dataclass(frozen=True)
class KubeconfigChoice:
    """Which kubeconfig file to use, and why (shown to the user when it goes wrong)."""

    path: Path
    source: str


def resolve_kubeconfig(explicit: str | os.PathLike[str] | None = None) -> KubeconfigChoice:
    """``--kubeconfig`` wins, then ``KUBECONFIG``, then the local fleet's, then ``~/.kube/config``."""
    if explicit:
        return KubeconfigChoice(Path(explicit).expanduser(), "--kubeconfig")
    env = os.environ.get("KUBECONFIG")
    if env:
        # kubectl merges a list; fleetflow uses the first existing file of it.
        parts = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
        for part in parts:
            if part.exists():
                return KubeconfigChoice(part, "KUBECONFIG")
        if parts:
            return KubeconfigChoice(parts[0], "KUBECONFIG")
    local = fleet_kubeconfig()
    if local.exists():
        return KubeconfigChoice(local, "local fleet")
    return KubeconfigChoice(Path.home() / ".kube" / "config", "default")


MGMT_CONTEXT_ENV = "FLEETFLOW_MGMT_CONTEXT"


def settings_file(home_dir: Path | None = None) -> Path:
    return (home_dir or home()) / "config.yaml"


def _read_settings(home_dir: Path | None = None) -> dict[str, str]:
    import yaml

    path = settings_file(home_dir)
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise ConfigError(f"settings file {path} is not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"settings file {path} must hold a mapping")
    return {str(k): str(v) for k, v in data.items()}


OPERATOR_CHART = "operatorChart"
HELM = "helm"
APP_IMAGE = "appImage"  # the todo-table Job's PostgreSQL client image (default: the seed's)


def setting(key: str) -> str | None:
    """One value of ``$FLEETFLOW_HOME/config.yaml``, or None."""
    return _read_settings().get(key)


def operator_chart() -> str | None:
    """The operator chart to install in place of CloudNativePG's published one (a local path), if
    any. The local fleet records its stand-in chart here on ``fleetflow fleet up`` and removes it
    on ``down``: ``fleetflow up`` sees a running local fleet without importing its tooling."""
    return setting(OPERATOR_CHART)


def save_setting(key: str, value: str | None, home: Path | None = None) -> Path:
    """Store one setting in ``$FLEETFLOW_HOME/config.yaml`` (or ``home``'s), written atomically;
    None removes it."""
    import yaml

    data = _read_settings(home)
    if value is None:
        data.pop(key, None)
    else:
        data[key] = value
    path = settings_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, yaml.safe_dump(data, sort_keys=True))
    return path


REPAIR_INTERVAL = "repairInterval"
REPAIR_INTERVAL_ENV = "FLEETFLOW_REPAIR_INTERVAL"
DEFAULT_REPAIR_SECONDS = 90.0
MIN_REPAIR_SECONDS = 10.0  # Prefect refuses a proactive trigger's ``within`` below 10 s


@dataclass(frozen=True)
class RepairInterval:
    """How soon a run whose executor died is marked Crashed and redone.

    One setting, two uses that must agree: an executor sends a heartbeat for each run it holds
    every ``heartbeat`` seconds, and the platform's automation crashes a run that sent none for
    ``window`` seconds. Three heartbeats fit in a window, so one late or lost heartbeat (a busy
    machine) crashes nothing.
    """

    window: float

    @property
    def heartbeat(self) -> float:
        return self.window / 3


def repair_interval() -> RepairInterval:
    """``FLEETFLOW_REPAIR_INTERVAL``, then ``repairInterval`` in the settings file, then 90 s."""
    raw = os.environ.get(REPAIR_INTERVAL_ENV) or setting(REPAIR_INTERVAL)
    source = REPAIR_INTERVAL_ENV if os.environ.get(REPAIR_INTERVAL_ENV) else REPAIR_INTERVAL
    if raw is None:
        return RepairInterval(DEFAULT_REPAIR_SECONDS)
    try:
        seconds = float(raw.strip().removesuffix("s"))
    except ValueError:
        seconds = float("nan")
    if not seconds >= MIN_REPAIR_SECONDS or seconds == float("inf"):
        raise ConfigError(
            f"{source} must be a number of seconds, at least {MIN_REPAIR_SECONDS:.0f}, not {raw!r}"
        )
    return RepairInterval(seconds)


def mgmt_context(explicit: str | None = None) -> str:
    """The management cluster's kubeconfig context: flag, then env, then the settings file."""
    if explicit:
        return explicit
    if os.environ.get(MGMT_CONTEXT_ENV):
        return os.environ[MGMT_CONTEXT_ENV]
    stored = _read_settings().get("mgmtContext")
    if stored:
        return stored
    raise ConfigError(
        f"no management cluster configured: pass --context, set {MGMT_CONTEXT_ENV}, "
        "or run 'fleetflow init --context CONTEXT'"
    )
