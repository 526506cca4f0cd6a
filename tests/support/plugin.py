"""The tests' one pytest plugin: isolation, markers, and the fixtures more than one module uses.

Registered once, by ``pytest_plugins`` in ``tests/conftest.py``.

- Every test runs with ``KUBECONFIG``, the API token, the management context and all
  ``PREFECT_*`` variables cleared and its own ``FLEETFLOW_HOME``, so no test can touch a
  developer's real clusters, Prefect server or fleet.
- A test marked neither ``integration`` nor ``e2e`` is marked ``unit``: ``-m unit`` selects
  exactly the tests that need no fleet.
- The integration tier shares one local fleet per session (:func:`local_fleet`), one Prefect
  test server (:func:`prefect_api`) and a namespace per test (:func:`namespace`); the e2e tier
  shares the demo's platform (:func:`seed`) and a namespace per test on it
  (:func:`seed_namespace`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleetflow_dev import binaries
from fleetflow_dev.manager import DEFAULT_CLUSTERS, Fleet

from tests.support import e2e_seed
from tests.support.e2e_seed import Seed
from tests.support.local_fleet import LocalFleet

# The Prefect test server is started once per session, before any per-test isolation: keep it
# from phoning home (there is no network here, and its failed attempts only add noise).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

NEEDS_A_FLEET = ("integration", "e2e")


# --- markers -------------------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``unit`` every test that needs neither the local fleet nor the e2e platform."""
    for item in items:
        if not any(item.get_closest_marker(name) for name in NEEDS_A_FLEET):
            item.add_marker(pytest.mark.unit)


# --- every test ----------------------------------------------------------------------------------


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


# --- the integration tier: the local fleet and a Prefect server -----------------------------------


@pytest.fixture(scope="session")
def assets() -> binaries.Binaries:
    """The local fleet's binaries; the product finds the helm among them via ``FLEETFLOW_HELM``."""
    found = binaries.ensure()
    os.environ["FLEETFLOW_HELM"] = str(found["helm"])
    return found


@pytest.fixture(scope="session")
def local_fleet(tmp_path_factory: pytest.TempPathFactory, assets: binaries.Binaries) -> Iterator[LocalFleet]:
    """The local fleet (no nodes, no stand-in), brought up once per session."""
    home = tmp_path_factory.mktemp("fleet-home")
    fleet = Fleet(home)
    messages: list[str] = []
    try:
        fleet.up(DEFAULT_CLUSTERS, assets, messages.append, standin=False)
        yield LocalFleet(home, fleet, DEFAULT_CLUSTERS)
    finally:
        fleet.down(messages.append)


@pytest.fixture
def namespace(local_fleet: LocalFleet, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace name for this test, created on demand with
    :func:`tests.support.local_fleet.ensure_namespace`; deleted from every cluster after."""
    name = f"t-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:6]}"
    yield name
    for cluster in local_fleet.names:
        local_fleet.client(cluster).delete("v1", "Namespace", name)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real Prefect server (temporary SQLite) for the whole session; yields its API URL."""
    from prefect.settings import get_current_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(get_current_settings().api.url)


@pytest.fixture(scope="session")
def registry_env(local_fleet: LocalFleet, prefect_api: str) -> dict[str, str]:
    """Environment for CLI subprocesses: the session's fleet, management context and Prefect."""
    return dict(
        os.environ,
        FLEETFLOW_HOME=str(local_fleet.home),
        KUBECONFIG=str(local_fleet.kubeconfig),
        FLEETFLOW_MGMT_CONTEXT="mgmt",
        PREFECT_API_URL=prefect_api,
    )


# --- the e2e tier: the demo's platform -----------------------------------------------------------


@pytest.fixture(scope="session")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seed]:
    """``fleetflow demo`` (real CloudNativePG on real nodes) in a home of its own, left running
    for the tier; ``fleetflow down --local`` in that home at the end."""
    with e2e_seed.running_seed(tmp_path_factory) as running:
        yield running


@pytest.fixture
def seed_namespace(seed: Seed, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of this test on the seed's workload cluster; its requests and the namespace
    are removed after (see :func:`tests.support.e2e_seed.seed_namespace`)."""
    with e2e_seed.seed_namespace(seed, request) as name:
        yield name
