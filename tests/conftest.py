"""Shared fixtures.

Every test runs with ``KUBECONFIG`` and all ``PREFECT_*`` variables cleared and its own
``FLEETFLOW_HOME``, so no test can touch a developer's real clusters, Prefect server or fleet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The Prefect test server is started once per session, before any per-test isolation: keep it
# from phoning home (there is no network here, and its failed attempts only add noise).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("FLEETFLOW_API_TOKEN", raising=False)
    monkeypatch.delenv("FLEETFLOW_MGMT_CONTEXT", raising=False)
    for name in list(os.environ):
        if name.startswith("PREFECT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FLEETFLOW_HOME", str(tmp_path / "fleetflow-home"))


@pytest.fixture(scope="session")
def session_env() -> Iterator[pytest.MonkeyPatch]:
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show what passing tests printed (their timing figures) at the end of every run, so a CI log
    carries the measurements without ``-s`` (which would also interleave them with progress)."""
    printed = [
        (report.nodeid, report.capstdout.strip())
        for report in terminalreporter.stats.get("passed", [])
        if report.when == "call" and report.capstdout.strip()
    ]
    if printed:
        terminalreporter.section("figures printed by passing tests")
        for nodeid, text in printed:
            terminalreporter.write_line(nodeid)
            for line in text.splitlines():
                terminalreporter.write_line(f"    {line}")
