"""Plugins, the way kubectl and git have them: ``fleetflow NAME ...`` runs ``fleetflow-NAME ...``.

The local development fleet (``fleetflow_dev``, the ``fleetflow-fleet`` command) is such a plugin.
It is a separate process, not an import: the product never imports development tooling, and
an import-linter contract checks that. A plugin is looked up next to this interpreter first
(the virtual environment's ``bin``), then on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from fleetflow.errors import UsageError

PREFIX = "fleetflow-"
KNOWN = {"fleet": "the local development fleet: real etcd and kube-apiservers (fleetflow-fleet)"}


def find(name: str) -> Path | None:
    """The executable ``fleetflow-NAME``, or None."""
    beside = Path(sys.executable).parent / f"{PREFIX}{name}"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(f"{PREFIX}{name}")
    return Path(found) if found else None


def require(name: str, why: str) -> Path:
    found = find(name)
    if found is None:
        raise UsageError(f"{why} needs the plugin {PREFIX}{name}, which is not installed")
    return found


def run(name: str, args: list[str]) -> int:
    """Run the plugin with ``args``; its output is the user's, its exit code ours."""
    plugin = require(name, f"'fleetflow {name}'")
    return subprocess.run([str(plugin), *args], check=False).returncode
