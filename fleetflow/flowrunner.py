"""Run a fleetflow flow by name, without the core importing the flows package.

Imports point one way (flows -> tasks -> fleetflow), yet the CLI and the webhook API (core)
must start flows. Flows are therefore published as entry points in the group
``fleetflow.flows`` (see pyproject.toml) and looked up by name here, like plugins.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from fleetflow.errors import ConfigError

GROUP = "fleetflow.flows"


def available() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def run_flow(flow_name: str, /, **parameters: Any) -> Any:
    """Call flow ``flow_name`` in this process; its failure is raised as the flow's own exception."""
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == flow_name]
    if not matches:
        raise ConfigError(
            f"no flow named {flow_name!r} is installed (have: {', '.join(available()) or 'none'}); "
            "reinstall fleetflow"
        )
    flow = matches[0].load()
    return flow(**parameters)


def platform(name: str) -> Any:
    """``apply`` or ``serve`` from the deployments layer (entry point group ``fleetflow.platform``)."""
    matches = [ep for ep in entry_points(group="fleetflow.platform") if ep.name == name]
    if not matches:
        raise ConfigError(f"fleetflow's deployments are not installed (no {name!r}); reinstall fleetflow")
    return matches[0].load()
