"""The e2e tier's platform: ``fleetflow demo`` as a user runs it, on real nodes with the real
CloudNativePG.

One platform for the whole tier: :func:`running_seed` (the session fixture ``seed``) runs the
demo in a temporary ``FLEETFLOW_HOME`` (fleet with nodes, Prefect, executor, watcher, webhook
API; the seed's database with 3 instances; the todo-table Job), keeps its output next to that
home, and stops everything with ``fleetflow down --local`` at the end. The last test of the tier
calls :meth:`Seed.down` itself and checks the host is as it was (:class:`HostSnapshot`); the
fixture's teardown then finds nothing left to stop.

Every test asks for its own namespace (:func:`seed_namespace`, the fixture ``seed_namespace``,
labelled ``created-by: fleetflow-tests``) on the workload cluster and applies its Database
requests there, as GitOps would. Every wait has a deadline and names what it awaited; a timeout
shows the tails of the platform's logs and where the fleet's are.
"""

from __future__ import annotations

import base64
import glob
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from fleetflow.databases import crd
from fleetflow.databases.spec import DatabaseSpec, RequestRef, cnpg_name, manifest
from fleetflow.kube import KubeClient, WaitTimeoutError, client_for
from tests.support.eventually import eventually

FLEETFLOW = str(Path(sys.executable).parent / "fleetflow")
KUBECTL = "/usr/bin/kubectl"
PSQL = "/usr/bin/psql"
TEST_LABEL = {"created-by": "fleetflow-tests"}
CNPG = "postgresql.cnpg.io/v1"
SERVICE, WORKLOAD = "service-cluster", "workload-cluster"
DEMO_TIMEOUT = 900.0  # seconds: the demo, cold (images imported, fleet and platform started)
DOWN_TIMEOUT = 300.0
HEALTHY = "Cluster in healthy state"


# --- the host, before and after ----------------------------------------------------------------


def _lines(argv: list[str]) -> list[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr.strip()}"
    return proc.stdout.splitlines()


@dataclass(frozen=True)
class HostSnapshot:
    """What a node fleet leaves on the host when it is not cleaned up."""

    netns: frozenset[str]
    links: frozenset[str]
    routes: tuple[str, ...]
    iptables: tuple[str, ...]
    iptables_nat: tuple[str, ...]
    ip_forward: str

    @classmethod
    def take(cls) -> HostSnapshot:
        fleet_route = re.compile(r"^(172\.3[01]\.|10\.99\.)|\bdev ff[hn]\d+\b")
        return cls(
            netns=frozenset(Path(p).name for p in glob.glob("/run/netns/ff-node*")),
            links=frozenset(
                Path(p).name for p in glob.glob("/sys/class/net/ffh*") + glob.glob("/sys/class/net/ffn*")
            ),
            routes=tuple(r for r in _lines(["ip", "-4", "route", "show"]) if fleet_route.search(r)),
            iptables=tuple(_lines(["iptables", "-S"])),
            iptables_nat=tuple(_lines(["iptables", "-t", "nat", "-S"])),
            ip_forward=Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        )


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if text in cmdline and proc.pid != os.getpid():
            found.append(f"{proc.pid}: {cmdline[:300]}")
    return found


def mounts_under(*roots: str) -> list[str]:
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if any(point == root or point.startswith(root.rstrip("/") + "/") for root in roots):
            found.append(point)
    return found


# --- the seed ----------------------------------------------------------------------------------


@dataclass
class Seed:
    """The demo's platform: its home, output and clusters."""

    home: Path
    log: Path
    before: HostSnapshot
    env: dict[str, str]
    returncode: int | None = None  # None: the demo did not finish within DEMO_TIMEOUT
    output: str = ""
    demo_seconds: float = 0.0
    node_indexes: dict[str, int] = field(default_factory=dict)
    stopped: subprocess.CompletedProcess[str] | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.home / "fleet" / "kubeconfig"

    def client(self, context: str) -> KubeClient:
        return client_for(context, self.kubeconfig)

    @property
    def up(self) -> bool:
        return self.returncode == 0 and self.stopped is None

    def require_up(self) -> None:
        if self.stopped is not None:
            pytest.fail("the seed's platform was already stopped (the tier's last test stops it)")
        if self.returncode != 0:
            pytest.fail(f"the demo did not succeed (exit {self.returncode}); its output: {self.log}")

    def tails(self, lines: int = 25) -> str:
        """The end of the platform's logs, and where the fleet's are."""
        parts = []
        for path in sorted((self.home / "platform" / "logs").glob("*.log")):
            if path.name == "prefect-server.log":
                continue
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path}:\n" + "\n".join(text))
        parts.append(
            f"(fleet logs: {self.home}/fleet/logs and {self.home}/fleet/clusters/<name>/logs; "
            f"demo output: {self.log})"
        )
        return "\n".join(parts)

    def down(self) -> subprocess.CompletedProcess[str]:
        """``fleetflow down --local`` in the seed's home, once."""
        if self.stopped is None:
            try:
                self.stopped = subprocess.run(
                    [FLEETFLOW, "down", "--local"],
                    env=self.env,
                    capture_output=True,
                    text=True,
                    timeout=DOWN_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else str(exc.stdout or "")
                self.stopped = subprocess.CompletedProcess(
                    exc.cmd, -1, out, f"timed out after {DOWN_TIMEOUT}s"
                )
            with self.log.with_name("down.log").open("w") as log:
                log.write(self.stopped.stdout + self.stopped.stderr)
        return self.stopped


def _environment(home: Path) -> dict[str, str]:
    """The user's environment, without anything that points at another fleet or Prefect."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "FLEETFLOW_")) and k not in ("KUBECONFIG", "PYTEST_CURRENT_TEST")
    }
    env.update(FLEETFLOW_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
    return env


def _node_indexes(home: Path) -> dict[str, int]:
    import json

    state = home / "fleet" / "state.json"
    if not state.exists():
        return {}
    clusters = json.loads(state.read_text()).get("clusters") or {}
    return {name: int(c.get("node_index") or 0) for name, c in clusters.items() if c.get("node_index")}


@contextmanager
def running_seed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seed]:
    """``fleetflow demo`` (real CloudNativePG on real nodes) in a home of its own, left running
    for the tier; ``fleetflow down --local`` in that home at the end."""
    if os.geteuid() != 0:
        pytest.skip("the e2e tier starts real nodes (network namespaces, containerd): it needs root")
    # A long home on purpose, as users have (~/work/platform-team/...): the nodes' sockets must
    # not live under it, since a unix socket path holds at most 107 bytes.
    home = tmp_path_factory.mktemp("e2e") / "a-home-as-long-as-a-user-might-choose-for-it"
    home.mkdir()
    logs = tmp_path_factory.mktemp("e2e-logs")
    seed = Seed(home=home, log=logs / "demo.log", before=HostSnapshot.take(), env=_environment(home))
    started = time.monotonic()
    try:
        with seed.log.open("w") as out:
            try:
                done = subprocess.run(
                    [FLEETFLOW, "demo"],
                    env=seed.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=DEMO_TIMEOUT,
                    check=False,
                )
                seed.returncode = done.returncode
            except subprocess.TimeoutExpired:
                seed.returncode = None
        seed.demo_seconds = time.monotonic() - started
        seed.output = seed.log.read_text(errors="replace")
        seed.node_indexes = _node_indexes(home)
        yield seed
    finally:
        seed.node_indexes = seed.node_indexes or _node_indexes(home)
        stopped = seed.down()
        assert stopped.returncode == 0, f"fleetflow down --local failed: {stopped.stdout}{stopped.stderr}"


# --- one namespace per test, and Database requests in it ----------------------------------------


@contextmanager
def seed_namespace(seed: Seed, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of this test on the workload cluster (labelled as the tests'); afterwards its
    requests are deleted (fleetflow applies their policy), a retained CNPG Cluster is removed
    from the service cluster, and the namespace goes."""
    seed.require_up()
    short = request.node.name.removeprefix("test_")[:30].lower().replace("_", "-").strip("-")
    name = f"e2e-{short}-{uuid.uuid4().hex[:6]}"
    workload = seed.client(WORKLOAD)
    workload.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": TEST_LABEL}}
    )
    yield name
    if not seed.up:
        return
    service = seed.client(SERVICE)
    items, _ = workload.list(crd.API_VERSION, crd.KIND, name)
    for obj in items:
        ref = RequestRef.of(WORKLOAD, obj)
        workload.delete(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)
        try:  # fleetflow's finalizer: the platform applies the request's deletionPolicy
            workload.wait(
                crd.API_VERSION,
                crd.KIND,
                ref.name,
                ref.namespace,
                lambda o: o is None,
                timeout=90,
                awaiting=f"Database {ref} to be finalised by fleetflow after the test",
            )
        finally:
            service.delete(CNPG, "Cluster", cnpg_name(ref), WORKLOAD)  # a retained one
    workload.delete("v1", "Namespace", name)


def ask(seed: Seed, ref: RequestRef, **spec: Any) -> dict[str, Any]:
    """Apply a Database request as GitOps would."""
    return seed.client(ref.cluster).apply(manifest(ref, DatabaseSpec.from_spec(ref.name, spec)))


def ready(obj: dict[str, Any] | None) -> bool:
    return condition(obj).get("status") == "True"


def condition(obj: dict[str, Any] | None) -> dict[str, Any]:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), {})


def watch(
    seed: Seed,
    client: KubeClient,
    what: tuple[str, str, str, str | None],
    predicate: Callable[[dict[str, Any] | None], bool],
    timeout: float,
    awaiting: str,
) -> dict[str, Any] | None:
    """Watch one object (api version, kind, name, namespace) until ``predicate``; a timeout
    names what was awaited and shows the platform's logs."""
    try:
        return client.wait(*what, predicate, timeout=timeout, awaiting=awaiting)
    except WaitTimeoutError as exc:
        raise AssertionError(f"{exc}\n{seed.tails()}") from None


def wait_ready(seed: Seed, ref: RequestRef, timeout: float = 300) -> dict[str, Any]:
    obj = watch(
        seed,
        seed.client(ref.cluster),
        (crd.API_VERSION, crd.KIND, ref.name, ref.namespace),
        ready,
        timeout,
        f"Database {ref} to be Ready",
    )
    assert obj is not None
    return obj


def decoded(obj: dict[str, Any] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in ((obj or {}).get("data") or {}).items()}


def delivered(seed: Seed, ref: RequestRef) -> tuple[dict[str, Any], dict[str, str]]:
    """The credentials Secret next to the request: the object, and its decoded data."""
    obj = seed.client(ref.cluster).get("v1", "Secret", f"{ref.name}-credentials", ref.namespace)
    return obj, decoded(obj)


def psql(creds: dict[str, str], sql: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PGPASSWORD": creds["password"] if password is None else password,
        "PGCONNECT_TIMEOUT": "5",
    }
    return subprocess.run(
        [
            PSQL,
            f"--host={creds['host']}",
            f"--port={creds['port']}",
            f"--username={creds['username']}",
            f"--dbname={creds['dbname']}",
            "--no-password",
            "--set=ON_ERROR_STOP=1",
            "--tuples-only",
            "--no-align",
            f"--command={sql}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def psql_within(
    creds: dict[str, str], sql: str, timeout: float, awaiting: str, password: str | None = None
) -> str:
    """Run ``sql`` until it succeeds (the database may be switching over); its output."""

    def answered() -> subprocess.CompletedProcess[str]:
        done = psql(creds, sql, password)
        if done.returncode != 0:
            raise ConnectionError(done.stderr.strip())  # shown as the last failure on timeout
        return done

    return eventually(answered, awaiting, timeout, max_pause=1.0).stdout.strip()


def kubectl(seed: Seed, context: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL, f"--kubeconfig={seed.kubeconfig}", f"--context={context}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def load_balancer_address(seed: Seed, ref: RequestRef) -> str:
    """The ingress address of the request's CNPG Cluster's additional ``rw`` LoadBalancer."""
    name = cnpg_name(ref)
    svc = seed.client(SERVICE).get("v1", "Service", f"{name}-lb", WORKLOAD)
    assert svc["spec"]["type"] == "LoadBalancer", svc["spec"]
    assert (
        svc["spec"]["selector"].get("cnpg.io/instanceRole") == "primary"
        or svc["spec"]["selector"].get("role") == "primary"
    ), f"{name}-lb does not select the primary: {svc['spec']['selector']}"
    return str(svc["status"]["loadBalancer"]["ingress"][0]["ip"])
