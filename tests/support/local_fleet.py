"""The local fleet the integration tests share: its clusters' clients, and namespaces labelled as the tests'.

The session fixture ``local_fleet`` (in :mod:`tests.support.plugin`) brings it up once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fleetflow_dev.manager import Fleet

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


def ensure_namespace(client: KubeClient, name: str) -> None:
    client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": TEST_LABEL}})
