"""The local fleet, brought up once per test session, and one namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fleetflow_dev import binaries
from fleetflow_dev.manager import DEFAULT_CLUSTERS, Fleet

from fleetflow.kube import KubeClient, client_for

TEST_LABEL = {"created-by": "fleetflow-tests"}


@dataclass
class LocalFleet:
    home: Path
    fleet: Fleet
    names: tuple[str, ...]

    @property
    def kubeconfig(self) -> Path:
        return self.fleet.kubeconfig_path

    def client(self, name: str) -> KubeClient:
        return client_for(name, self.kubeconfig)


@pytest.fixture(scope="session")
def assets() -> binaries.Binaries:
    """The local fleet's binaries; the product finds the helm among them via ``FLEETFLOW_HELM``."""
    import os

    found = binaries.ensure()
    os.environ["FLEETFLOW_HELM"] = str(found["helm"])
    return found


@pytest.fixture(scope="session")
def local_fleet(tmp_path_factory: pytest.TempPathFactory, assets: binaries.Binaries) -> Iterator[LocalFleet]:
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
    """A fresh namespace name for this test, created on demand with :func:`ensure_namespace`."""
    name = f"t-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:6]}"
    yield name
    for cluster in local_fleet.names:
        local_fleet.client(cluster).delete("v1", "Namespace", name)


def ensure_namespace(client: KubeClient, name: str) -> None:
    client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": TEST_LABEL}})


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
    import os

    return dict(
        os.environ,
        FLEETFLOW_HOME=str(local_fleet.home),
        KUBECONFIG=str(local_fleet.kubeconfig),
        FLEETFLOW_MGMT_CONTEXT="mgmt",
        PREFECT_API_URL=prefect_api,
    )
