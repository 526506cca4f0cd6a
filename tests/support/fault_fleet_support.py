"""A local fleet of its own for the API-server fault tests: killing an API server of the
session's shared fleet could break modules that run after them, so these tests kill only
clusters nobody else uses (``f-mgmt``, ``f-service``, ``f-workload``, in a home of their own).

The clusters are registered (without a flow: the registry objects are written directly), the
CloudNativePG stand-in's chart is installed on ``f-service`` and its controller serves it in a
thread. Everything is stopped at the end, whatever happened.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fleetflow_dev import binaries
from fleetflow_dev.cnpg import controller
from fleetflow_dev.cnpg.install import install_chart
from fleetflow_dev.manager import Fleet

from fleetflow.kube import KubeClient, Kubeconfig, client_for
from fleetflow.registry import Registry

MGMT, SERVICE, WORKLOAD = "f-mgmt", "f-service", "f-workload"
LABELS = {MGMT: {"type": "mgmt"}, SERVICE: {"type": "services"}, WORKLOAD: {"postgres": "required"}}


@dataclass
class FaultFleet:
    home: Path
    fleet: Fleet
    assets: binaries.Binaries
    registry: Registry

    @property
    def kubeconfig(self) -> Path:
        return self.fleet.kubeconfig_path

    def client(self, name: str) -> KubeClient:
        return client_for(name, self.kubeconfig)

    def env(self, prefect_api: str) -> dict[str, str]:
        """Environment for fleetflow processes: this fleet, its management context, the Prefect server."""
        return dict(
            os.environ,
            FLEETFLOW_HOME=str(self.home),
            KUBECONFIG=str(self.kubeconfig),
            FLEETFLOW_MGMT_CONTEXT=MGMT,
            PREFECT_API_URL=prefect_api,
        )

    def outage(self, name: str, down_for: float) -> tuple[float, float]:
        """SIGKILL ``name``'s kube-apiserver, keep it down ``down_for`` seconds, start it again
        (same port, same etcd) and wait until it answers. Returns (outage, restart) seconds."""
        killed = time.monotonic()
        self.fleet.kill_apiserver(name)
        time.sleep(down_for)  # the injected fault: the API server stays down this long
        restarting = time.monotonic()
        self.fleet.restart_apiserver(name, self.assets)
        back = time.monotonic()
        return back - killed, back - restarting

    def api_log(self, name: str) -> str:
        log = self.fleet.paths(name).log("kube-apiserver")
        return "\n".join(log.read_text(errors="replace").splitlines()[-10:]) if log.exists() else ""


@contextmanager
def fault_fleet(tmp_path_factory: pytest.TempPathFactory, assets: binaries.Binaries) -> Iterator[FaultFleet]:
    home = tmp_path_factory.mktemp("fault-fleet-home")
    fleet = Fleet(home)
    messages: list[str] = []
    stop = threading.Event()
    root = tmp_path_factory.mktemp("fault-standin")
    standin = threading.Thread(target=controller.run, args=(fleet.kubeconfig_path, [SERVICE], stop, root))
    try:
        started = time.monotonic()
        fleet.up((MGMT, SERVICE, WORKLOAD), assets, messages.append, standin=False)
        print(f"fault fleet: 3 clusters up in {time.monotonic() - started:.1f}s")
        registry = Registry(client_for(MGMT, fleet.kubeconfig_path))
        registry.install()
        for name, labels in LABELS.items():
            registry.ensure_namespace(name)
            registry.store_kubeconfig(name, Kubeconfig.from_file(fleet.kubeconfig_path, name))
            registry.apply(name, name, labels)
        install_chart(fleet.kubeconfig_path, SERVICE, assets["helm"])
        standin.start()
        yield FaultFleet(home, fleet, assets, registry)
    finally:
        stop.set()
        if standin.is_alive():
            standin.join(60)
        controller.destroy_servers(root)
        fleet.down(messages.append)
