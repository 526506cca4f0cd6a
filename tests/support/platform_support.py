"""The platform's processes as a user starts them, for the end-to-end tests.

``fleetflow executor``, ``fleetflow watch`` and ``fleetflow api`` run as processes against the
session's Prefect server and local fleet, with the CloudNativePG stand-in serving the service
cluster in a thread. A part can be stopped and started again, as an operator would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fleetflow_dev.cnpg import controller
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from fleetflow.kube import Kubeconfig
from fleetflow.registry import Registry
from fleetflow.supervisor import readiness
from fleetflow.supervisor.parts import DEPLOYMENTS
from fleetflow.supervisor.processes import free_port
from tests.support.eventually import eventually
from tests.support.local_fleet import LocalFleet

FLEETFLOW = str(Path(sys.executable).parent / "fleetflow")
GRACE = 20  # the executor's --grace: seconds to finish its runs when stopped


class Platform:
    def __init__(
        self, registry: Registry, env: dict[str, str], logs: Path, argv: dict[str, list[str]]
    ) -> None:
        self.registry, self.env, self.logs, self.argv = registry, env, logs, argv
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.env['FLEETFLOW_TEST_API_PORT']}"

    def start(self, part: str) -> None:
        with (self.logs / f"{part}.log").open("a") as log:
            self.procs[part] = subprocess.Popen(
                [FLEETFLOW, *self.argv[part]], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self, part: str) -> None:
        """SIGTERM, then SIGKILL once the part had its grace (the executor's is ``GRACE`` seconds
        to finish what it holds): a part left running would act on every later test module."""
        proc = self.procs.pop(part)
        proc.terminate()
        try:
            proc.wait(GRACE + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            raise AssertionError(f"{part} did not stop within {GRACE + 30}s of SIGTERM; killed") from None

    def stop_all(self) -> None:
        """Stop every part, even when one of them fails to stop; then say which failed."""
        failed: list[AssertionError] = []
        for part in list(self.procs):
            try:
                self.stop(part)
            except AssertionError as exc:
                failed.append(exc)
        if failed:
            raise failed[0]

    def tails(self) -> str:
        return "\n".join(
            f"--- {p.name}:\n" + "\n".join(p.read_text().splitlines()[-15:])
            for p in sorted(self.logs.glob("*.log"))
        )

    def enroll(self, name: str, context: str, labels: dict[str, str]) -> None:
        """Register without a flow: write the registry objects directly."""
        self.registry.ensure_namespace(name)
        self.registry.store_kubeconfig(name, Kubeconfig.from_file(Path(self.env["KUBECONFIG"]), context))
        self.registry.apply(name, context, labels)


def deployed(api_url: str) -> int:
    """How many deployments the Prefect server has (the executor applies them with automations)."""
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return len(client.read_deployments())


@contextmanager
def running_platform(
    local_fleet: LocalFleet, prefect_api: str, tmp_path_factory: pytest.TempPathFactory, token: str
) -> Iterator[Platform]:
    logs = tmp_path_factory.mktemp("platform-logs")
    api_port = free_port()
    env = dict(
        os.environ,
        KUBECONFIG=str(local_fleet.kubeconfig),
        FLEETFLOW_MGMT_CONTEXT="mgmt",
        PREFECT_API_URL=prefect_api,
        FLEETFLOW_HOME=str(local_fleet.home),
        FLEETFLOW_API_TOKEN=token,
        FLEETFLOW_TEST_API_PORT=str(api_port),
    )
    registry = Registry(local_fleet.client("mgmt"))
    registry.install()
    # A platform starts from an empty registry, as on a fresh management cluster: what earlier
    # modules left registered would be watched and served too, and a cluster this module
    # registers again under a name of its own would be an alias of theirs (served as theirs).
    for record in registry.list():
        registry.deregister(record.name)
    argv = {
        "executor": ["executor", "--name", "e2e", "--deploy", "--local-chart", "--grace", str(GRACE)],
        "watch": ["watch"],
        "api": ["api", "--port", str(api_port)],
    }
    platform = Platform(registry, env, logs, argv)
    stop = threading.Event()
    standin_root = tmp_path_factory.mktemp("standin")
    standin = threading.Thread(
        target=controller.run, args=(local_fleet.kubeconfig, ["service-cluster"], stop, standin_root)
    )
    try:
        for part in argv:
            platform.start(part)
        standin.start()
        # Automations must exist before the first event, or it triggers nothing.
        eventually(
            lambda: deployed(prefect_api) >= DEPLOYMENTS,
            "the platform's deployments and automations",
            timeout=180,
            detail=platform.tails,
        )
        # On a server that earlier modules used, the deployments exist before this executor has
        # applied anything: its own word says when its deployments and automations are in place.
        executor_log = logs / "executor.log"
        eventually(
            lambda: "executor ready" in executor_log.read_text(),
            "the executor to be ready",
            timeout=180,
            detail=platform.tails,
        )
        eventually(
            lambda: readiness.probe(platform.api_url + "/healthz")[0],
            "the webhook API",
            60,
            detail=platform.tails,
        )
        eventually(
            lambda: "synced" in (logs / "watch.log").read_text(),
            "the watcher's first sync",
            60,
            detail=platform.tails,
        )
        yield platform
    finally:
        try:
            platform.stop_all()
        finally:
            stop.set()
            if standin.is_alive():
                standin.join(60)
            controller.destroy_servers(standin_root)
