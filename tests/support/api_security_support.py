"""The real ``fleetflow api`` process, raw HTTP to it, and a snapshot of everything it could change.

The security tests talk to the API as an attacker would: over a socket, with paths no HTTP
client would normalise and with lengths that lie, so :func:`raw` writes the bytes itself.
:func:`snapshot` is what "nothing changed" means: every FleetCluster (labels and
resourceVersion), every Secret and namespace in the management cluster, every Database object
in every cluster of the fleet (live ones: what other modules are still deleting changes on its
own), and every flow run in Prefect but those its scheduler made. :func:`burst` sends many requests
at once; :func:`settled` waits for the API process to close them and release their descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from fleetflow.databases import crd as db_crd
from fleetflow.errors import FleetflowError
from fleetflow.registry import Registry
from fleetflow.registry import crd as fleet_crd
from fleetflow.supervisor import readiness
from fleetflow.supervisor.processes import free_port
from tests.support.eventually import EventuallyTimeout, eventually
from tests.support.local_fleet import LocalFleet

FLEETFLOW = str(Path(sys.executable).parent / "fleetflow")


@dataclass(frozen=True)
class Targets:
    on: str  # labelled postgres=required: a DELETE that got through would unlabel it
    off: str  # unlabelled: a POST that got through would label it
    namespace: str  # in the workload cluster, holding the Database request "victim" of `on`


@dataclass
class ApiProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def api_process(local_fleet: LocalFleet, token: str, logs: Path) -> Iterator[ApiProcess]:
    """``fleetflow api`` as a user starts it, against the fleet's management cluster; stopped after."""
    Registry(local_fleet.client("mgmt")).install()  # its /healthz lists the registered clusters
    port = free_port()
    env = dict(
        os.environ,
        KUBECONFIG=str(local_fleet.kubeconfig),
        FLEETFLOW_MGMT_CONTEXT="mgmt",
        FLEETFLOW_HOME=str(local_fleet.home),
        FLEETFLOW_API_TOKEN=token,
    )
    log = logs / "api.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [FLEETFLOW, "api", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    api = ApiProcess(f"http://127.0.0.1:{port}", proc, log)
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"fleetflow api exited with {proc.returncode}:\n{api.tail()}")
            ok, why = readiness.probe(api.url + "/healthz")
            if not ok:
                raise ConnectionError(why)  # shown as the last failure if it never answers 200
            return True

        eventually(healthy, "fleetflow api's /healthz 200", 60, detail=api.tail)
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    @property
    def detail(self) -> str:
        return str(json.loads(self.body)["detail"])

    @property
    def line(self) -> str:
        """The error's one line: the JSON detail, or uvicorn's own plain-text answer."""
        if self.headers.get("content-type", "").startswith("application/json"):
            return self.detail
        return self.body.decode(errors="replace").strip()


def request_bytes(
    method: str, target: str, body: bytes | None = None, headers: dict[str, str | None] | None = None
) -> bytes:
    """One HTTP/1.1 request, byte for byte. Content-Length is added when there is a body, unless
    ``headers`` gives one (a lie, or None for none at all) or ``Transfer-Encoding``."""
    given = {"Host": "api.test", "Connection": "close", **(headers or {})}
    names = {name.lower() for name in given}
    if body is not None and not names & {"content-length", "transfer-encoding"}:
        given["Content-Length"] = str(len(body))
    lines = [f"{k}: {v}\r\n" for k, v in given.items() if v is not None]
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(lines)
    return head.encode("latin-1") + b"\r\n" + (body or b"")


def raw(url: str, data: bytes, timeout: float = 30.0) -> Answer:
    """Send ``data`` and read the answer until the server closes (the request says close)."""
    parts = urlsplit(url)
    started = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        # An answer before the whole request was read (a 413) may close early: the answer is there.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            raise AssertionError(
                f"awaited an answer to {data[:80]!r} within {timeout} s: none came"
            ) from None
    seconds = time.monotonic() - started
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), f"no HTTP answer to {data[:80]!r}: {received[:200]!r}"
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return Answer(int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body, seconds)


def _objects(client: Any, api_version: str, kind: str) -> dict[str, Any]:
    """Live objects only: what other test modules are still deleting (a namespace terminating,
    a Database finalised) keeps changing on its own and is left out; a request that deleted
    something shows as its object gone from the snapshot."""
    items, _ = client.list(api_version, kind)
    namespaces, _ = client.list("v1", "Namespace")
    going = {n["metadata"]["name"] for n in namespaces if n["metadata"].get("deletionTimestamp")}
    return {
        f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}": (
            o["metadata"]["resourceVersion"],
            o["metadata"].get("labels") or {},
        )
        for o in items
        if not o["metadata"].get("deletionTimestamp") and o["metadata"].get("namespace") not in going
    }


def _databases(client: Any) -> dict[str, Any] | None:
    try:
        return _objects(client, db_crd.API_VERSION, db_crd.KIND)
    except FleetflowError:  # no Database CRD in this cluster (yet): nothing to change
        return None


def snapshot(local_fleet: LocalFleet, prefect_api: str) -> dict[str, Any]:
    """Everything a request could change, with resource versions (any write changes them).

    The Kubernetes lists run in parallel, Prefect's in this thread (its settings are
    context-local)."""
    mgmt = local_fleet.client("mgmt")
    reads: dict[str, Callable[[], Any]] = {
        "fleetclusters": lambda: _objects(mgmt, fleet_crd.API_VERSION, fleet_crd.KIND),
        "secrets": lambda: _objects(mgmt, "v1", "Secret"),
    }
    for name in local_fleet.names:
        client = local_fleet.client(name)
        reads[f"namespaces in {name}"] = partial(lambda c: sorted(_objects(c, "v1", "Namespace")), client)
        reads[f"databases in {name}"] = partial(_databases, client)
    with ThreadPoolExecutor(len(reads)) as pool:
        futures = {key: pool.submit(read) for key, read in reads.items()}
        with (
            temporary_settings(updates={PREFECT_API_URL: prefect_api}),
            get_client(sync_client=True) as prefect,
        ):
            # The webhook never calls Prefect: a request that got through could only make runs
            # appear (by a label change an automation follows). Runs the scheduler creates for
            # other modules' reconcile deployments, and their states, are not the API's doing.
            runs: list[Any] = []
            while page := prefect.read_flow_runs(limit=200, offset=len(runs)):
                runs.extend(page)
        state = {key: future.result() for key, future in futures.items()}
    state["flow runs"] = sorted(str(r.id) for r in runs if not r.auto_scheduled)
    return state


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two snapshots, one line per key (empty when nothing changed)."""
    out = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            diff = {k: (old.get(k), new.get(k)) for k in set(old) | set(new) if old.get(k) != new.get(k)}
            out.append(f"{key}: {diff}")
        else:
            out.append(f"{key}: {old!r} -> {new!r}")
    return out


class Watched:
    """What every request here must leave as it found it: the last snapshot, retaken after each
    check, so that each test costs one snapshot and a failing one is not blamed on the next."""

    def __init__(self, local_fleet: LocalFleet, prefect_api: str) -> None:
        self.local_fleet, self.prefect_api = local_fleet, prefect_api
        self.state = snapshot(local_fleet, prefect_api)

    def take(self) -> dict[str, Any]:
        self.state = snapshot(self.local_fleet, self.prefect_api)
        return self.state

    @contextmanager
    def unchanged(self, what: str) -> Iterator[None]:
        """Fail if anything changed between the last snapshot and the end of the block."""
        before = self.state
        try:
            yield
        finally:
            diff = changes(before, self.take())
            if diff:
                print(f"{what} changed something: {diff}")
        assert not diff, f"{what} changed something: {diff}"


Kind = tuple[str, str, str, dict[str, str], bytes | None]
"""One kind of request in a burst: (name, method, path, headers, body)."""


async def burst(
    url: str, kinds: list[Kind], count: int, concurrency: int
) -> list[tuple[str, int | str, float]]:
    """``count`` requests, ``concurrency`` at a time, taking ``kinds`` in turn.
    Each result is (kind, status or the exception's name, seconds)."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)

    async def one(client: httpx.AsyncClient, i: int) -> tuple[str, int | str, float]:
        kind, method, path, headers, body = kinds[i % len(kinds)]
        async with gate:
            started = time.monotonic()
            try:
                response = await client.request(method, path, headers=headers, content=body)
                outcome: int | str = response.status_code
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            return kind, outcome, time.monotonic() - started

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return await asyncio.gather(*(one(client, i) for i in range(count)))


@dataclass(frozen=True)
class Descriptors:
    """The API process's open descriptors: all of them, and its TCP connections among them."""

    fds: int
    inbound: int  # connections from clients, still open
    outbound: dict[str, int]  # pooled connections to each Kubernetes API server ("host:port")

    @property
    def others(self) -> int:
        """Descriptors that are not pooled connections: what a leak would add to."""
        return self.fds - sum(self.outbound.values())


def descriptors(process: psutil.Process, port: int) -> Descriptors:
    inbound, outbound = 0, Counter[str]()
    for conn in process.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.raddr:
            inbound += 1
        elif conn.raddr:
            outbound[f"{conn.raddr.ip}:{conn.raddr.port}"] += 1
    return Descriptors(process.num_fds(), inbound, dict(outbound))


def settled(process: psutil.Process, port: int, at_most: int) -> Descriptors:
    """The API's descriptors once it has closed every client connection and holds at most
    ``at_most`` others, or after 30 s."""
    last = [descriptors(process, port)]

    def closed() -> Descriptors | None:
        last[0] = now = descriptors(process, port)
        return now if now.inbound == 0 and now.others <= at_most else None

    try:  # the server closes its side as it notices each client's close
        return eventually(closed, "the API to close its client connections", 30)
    except EventuallyTimeout:
        return last[0]  # the caller's assertion says what is still open


def chunked(body: bytes, size: int = 16 * 1024) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def fill(template: bytes, t: Targets) -> bytes:
    """The request with this module's target names in place of @on, @off, @ns (@ON... upper case)."""
    for token, value in ((b"@OFF", t.off), (b"@ON", t.on), (b"@NS", t.namespace)):
        template = template.replace(token, value.upper().encode())
    for token, value in ((b"@off", t.off), (b"@on", t.on), (b"@ns", t.namespace)):
        template = template.replace(token, value.encode())
    return template
