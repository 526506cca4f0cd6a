"""Hostile requests against the real ``fleetflow api`` process, and proof that nothing changed.

Two registered clusters of this module's own are the targets: ``on`` (labelled
``postgres=required``, with a Database request ``victim`` in a namespace of the workload cluster)
and ``off`` (no label). Every request below would change one of them if it got through: a POST
would label ``off`` or create a Database, a DELETE would unlabel ``on`` or delete ``victim``.
Each check compares a snapshot of the management cluster, the Databases and Prefect's flow runs
taken after it with the one before it (:class:`api_security_support.Watched`); a control test
shows that a request that is let through does change the snapshot.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import statistics
import time
import uuid
from collections.abc import Iterator

import httpx
import psutil
import pytest

from fleetflow.kube import Kubeconfig
from fleetflow.registry import Registry
from fleetflow.webhook import create_app
from tests.support.api_security_support import (
    ApiProcess,
    Kind,
    Targets,
    Watched,
    api_process,
    burst,
    changes,
    chunked,
    descriptors,
    fill,
    raw,
    request_bytes,
    settled,
)
from tests.support.local_fleet import LocalFleet

pytestmark = [pytest.mark.integration, pytest.mark.security]

TOKEN = secrets.token_urlsafe(32)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}
AUTH_LINE = f"Authorization: Bearer {TOKEN}\r\n"
FD_MARGIN = 3  # open descriptors the API may hold beyond its count before a burst


@pytest.fixture(scope="module")
def api(local_fleet: LocalFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    with api_process(local_fleet, TOKEN, tmp_path_factory.mktemp("api-security")) as running:
        yield running


@pytest.fixture(scope="module")
def targets(local_fleet: LocalFleet, api: ApiProcess) -> Iterator[Targets]:
    registry = Registry(local_fleet.client("mgmt"))
    suffix = uuid.uuid4().hex[:6]
    found = Targets(f"sec-on-{suffix}", f"sec-off-{suffix}", f"t-sec-{suffix}")
    kubeconfig = Kubeconfig.from_file(local_fleet.kubeconfig, "workload-cluster")
    try:
        for name, labels in ((found.on, {"postgres": "required"}), (found.off, {})):
            registry.ensure_namespace(name)
            registry.store_kubeconfig(name, kubeconfig)
            registry.apply(name, "workload-cluster", {"type": "app", **labels})
        body = {"cluster": found.on, "namespace": found.namespace, "name": "victim"}
        created = httpx.post(api.url + "/v1/databases", json=body, headers=AUTH, timeout=60)
        assert created.status_code == 202, created.text
        yield found
    finally:
        for name in (found.on, found.off):
            registry.deregister(name, delete_namespace=True)
        local_fleet.client("workload-cluster").delete("v1", "Namespace", found.namespace)


@pytest.fixture(scope="module")
def state(targets: Targets, local_fleet: LocalFleet, prefect_api: str) -> Watched:
    return Watched(local_fleet, prefect_api)


def v1_routes(t: Targets) -> list[tuple[str, str, bytes | None]]:
    """Every /v1 route the API serves, from its own OpenAPI document, each aimed at a target."""
    names = {"cluster": t.on, "namespace": t.namespace, "name": "victim"}
    body = json.dumps({"cluster": t.off}).encode()
    paths = create_app(lambda: pytest.fail("not called"), "unused").openapi()["paths"]
    return [
        (method.upper(), path.format(**names), body if method == "post" else None)
        for path, operations in sorted(paths.items())
        if path.startswith("/v1")
        for method in sorted(operations)
    ]


AUTHORIZATIONS = {  # test id: the Authorization header sent (None: no header at all)
    "none": None,
    "empty": "",
    "scheme-only": "Bearer",
    "scheme-and-space": "Bearer ",
    "wrong": "Bearer wrong",
    "token-plus-one": f"Bearer {TOKEN}x",
    "token-minus-one": f"Bearer {TOKEN[:-1]}",
    "token-swapcase": f"Bearer {TOKEN.swapcase()}",
    "basic-scheme": f"Basic {TOKEN}",
    "no-scheme": TOKEN,
    "tab-separator": f"Bearer\t{TOKEN}",
    "4000-chars": "Bearer " + "x" * 4000,
    "latin-1": "Bearer t\xf6k\xe9n",
}


@pytest.mark.parametrize("authorization", AUTHORIZATIONS.values(), ids=AUTHORIZATIONS.keys())
def test_every_v1_route_is_401_without_the_token_and_changes_nothing(
    api: ApiProcess, targets: Targets, state: Watched, authorization: str | None
) -> None:
    routes = v1_routes(targets)
    assert {(m, p.count("/")) for m, p, _ in routes} == {
        ("GET", 2), ("POST", 2), ("GET", 3), ("DELETE", 3), ("GET", 5), ("DELETE", 5),
    }, f"the API's routes changed; cover the new ones here: {routes}"  # fmt: skip
    assert len(routes) == 7
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    with state.unchanged(f"{len(routes)} requests with Authorization {authorization!r}"):
        for method, path, body in routes:
            answer = raw(api.url, request_bytes(method, path, body, headers))
            assert answer.status == 401, (method, path, answer)
            assert answer.headers["www-authenticate"] == "Bearer"
            assert answer.detail in (
                "missing bearer token: send 'Authorization: Bearer <token>'",
                "malformed Authorization header: expected 'Bearer <token>'",
                "invalid bearer token",
            )
            assert TOKEN.encode() not in answer.body


@pytest.mark.parametrize(
    "path", ["//v1/databases", "/V1/databases", "/v1/databases/", "/v1/../v1/databases", "/%76%31/databases"]
)
def test_a_route_spelled_differently_is_not_served_without_the_token(
    api: ApiProcess, targets: Targets, state: Watched, path: str
) -> None:
    with state.unchanged(f"unauthenticated requests to {path}"):
        for method in ("GET", "POST"):
            body = json.dumps({"cluster": targets.off}).encode() if method == "POST" else None
            answer = raw(api.url, request_bytes(method, path, body, {"Content-Type": "application/json"}))
            assert answer.status in (401, 404, 405), (method, path, answer)


def test_a_request_that_is_let_through_changes_the_snapshot(
    api: ApiProcess, targets: Targets, state: Watched
) -> None:
    """The control: the snapshot does see what an accepted label request and Database request do."""
    before = state.state
    with httpx.Client(base_url=api.url, headers=AUTH, timeout=60) as client:
        assert client.post("/v1/databases", json={"cluster": targets.off}).status_code == 202
        body = {"cluster": targets.off, "namespace": targets.namespace, "name": "control"}
        assert client.post("/v1/databases", json=body).status_code == 202
        try:
            seen = changes(before, state.take())
            assert any(line.startswith("fleetclusters:") and targets.off in line for line in seen), seen
            assert any(
                line.startswith("databases in workload-cluster:") and "control" in line for line in seen
            )
        finally:
            assert client.delete(f"/v1/databases/{targets.off}").status_code == 202
            assert (
                client.delete(f"/v1/databases/{targets.off}/{targets.namespace}/control").status_code == 202
            )
            state.take()  # what the next tests must leave as it is


def post(case: str, body: object, status: int, says: str, h: dict[str, str | None] | None = None) -> object:
    """A POST /v1/databases case: ``body`` as bytes, or an object sent as JSON."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return pytest.param("POST", "/v1/databases", content, {**JSON, **(h or {})}, status, says, id=case)


def call(case: str, method: str, path: str, status: int, says: str) -> object:
    return pytest.param(method, path, None, AUTH, status, says, id=case)


def with_field(field: str, raw_value: bytes) -> bytes:
    """A Database request whose ``field`` is ``raw_value``, byte for byte (it may not be JSON)."""
    return json.dumps({**REQUEST, field: "X"}).encode().replace(b'"X"', raw_value)


REQUEST = {"cluster": "@on", "namespace": "@ns", "name": "typed"}  # a Database request, + one bad field
DNS = "must be a DNS-1123 label"
OFF = b'{"cluster": "@off"}'
BIG = {"cluster": "@off", "database": "a" * 70_000}
CHUNKED: dict[str, str | None] = {"Transfer-Encoding": "chunked"}
BAD_NAMES = {  # @x: a real name; @X: it in upper case
    "dotdot": "../@x",
    "encoded-dotdot": "%2e%2e%2f@x",
    "slash": "@x/y",
    "uppercase": "@X",
    "300-chars": "a" * 300,
    "nul": "@x\x00",
    "newline": "@x\n",
    "unicode": "@xé",
    "fullwidth": "\uff58\uff59",
}


def bad_names(field: str, real: str, upper: str) -> list[object]:
    """A Database request (or the label path, for ``cluster``) whose ``field`` is a bad name."""
    body: dict[str, object] = {"cluster": "@off"} if field == "cluster" else dict(REQUEST)
    return [
        post(f"{field}-{label}", {**body, field: n.replace("@x", real).replace("@X", upper)}, 422, DNS)
        for label, n in BAD_NAMES.items()
    ]


BAD_INPUT = [
    post("malformed-json", b'{"cluster": ', 422, "request body is not valid JSON: Expecting"),
    post("json-string", b'"@off"', 422, "body: Input should be a valid dictionary"),
    post("empty", b"", 422, "body: Field required"),
    post("form", b"cluster=@off", 422, "not valid JSON", {"Content-Type": "x-www-form-urlencoded"}),
    post("70-KiB", BIG, 413, "bytes is too large: the limit is 65536 bytes"),
    post("lying-length", OFF, 413, "of 10000000 bytes is too large", {"Content-Length": "10000000"}),
    post("chunked-70-KiB", BIG, 413, "request body is too large: the limit is 65536 bytes", CHUNKED),
    post("length-too-long", OFF, 408, "not received within 10 s", {"Content-Length": "+50"}),
    post("length-too-short", OFF, 422, "not valid JSON", {"Content-Length": "12"}),
    post("no-length", OFF, 422, "body: Field required", {"Content-Length": None}),
    post("bad-length", OFF, 400, "Invalid HTTP request", {"Content-Length": "1x"}),
    post("nested-100000", b"[" * 100_000, 413, "of 100000 bytes is too large"),
    post("nested-60000", b"[" * 60_000, 422, "request body is nested deeper than 32 levels"),
    post("nested-field", with_field("storage", b"[" * 40 + b"]" * 40), 422, "nested deeper than 32 levels"),
    post("not-utf8", b'{"cluster": "@off\xff"}', 422, "request body is not UTF-8: byte 0xff at offset"),
    post("latin-1", b'{"cluster": "caf\xe9"}', 422, "not UTF-8: byte 0xe9 at offset 16"),
    post("utf-16", '{"cluster": "x"}'.encode("utf-16"), 422, "not UTF-8: byte 0xff at offset 0"),
    post("nan", with_field("instances", b"NaN"), 422, "not valid JSON: NaN is not a JSON number"),
    post("infinity", with_field("instances", b"-Infinity"), 422, "-Infinity is not a JSON number"),
    post("5000-digits", with_field("instances", b"9" * 5000), 422, "Exceeds the limit (4300 digits)"),
    post("repeated-key", b'{"cluster": "x", "cluster": "@off"}', 422, "key 'cluster' appears twice"),
    post("cluster-number", {"cluster": 5}, 422, "body.cluster: Input should be a valid string"),
    post("cluster-list", {"cluster": ["@off"]}, 422, "body.cluster: Input should be a valid string"),
    post("instances-string", {**REQUEST, "instances": "3"}, 422, "body.instances: Input should be"),
    post("instances-bool", {**REQUEST, "instances": True}, 422, "body.instances: Input should be"),
    post("instances-float", {**REQUEST, "instances": 2.0}, 422, "body.instances: Input should be"),
    post("instances-0", {**REQUEST, "instances": 0}, 422, "spec.instances 0 must be an integer from 1"),
    post("unknown-field", {"cluster": "@off", "labels": {}}, 422, "body.labels: Extra inputs are not"),
    post("password-field", {"cluster": "@off", "password": "hunter2"}, 422, "body.password: Extra"),
    *bad_names("cluster", "@off", "@OFF"),
    *bad_names("namespace", "@ns", "@NS"),
    *bad_names("name", "victim", "VICTIM"),
    post("secret-traversal", {**REQUEST, "secretName": "../../etc/passwd"}, 422, "spec.secretName"),
    post("secret-newline", {**REQUEST, "secretName": "x-credentials\n"}, 422, "spec.secretName"),
    post("database-newline", {**REQUEST, "database": "app\n"}, 422, "spec.database 'app\\n'"),
    post("storage-newline", {**REQUEST, "storage": "1Gi\n"}, 422, "spec.storage '1Gi\\n'"),
    call("path-dotdot", "GET", "/v1/databases/../../healthz", 422, f"invalid cluster name '..': {DNS}"),
    call("path-dotdot-name", "DELETE", "/v1/databases/@on/../victim", 422, "request name '..'"),
    call("path-encoded-dotdot", "DELETE", "/v1/databases/%2e%2e/%2e%2e/victim", 422, "cluster name '..'"),
    call("path-encoded-slash", "DELETE", "/v1/databases/@on%2fx", 404, "Not Found"),
    call("path-uppercase", "DELETE", "/v1/databases/@ON", 422, f"invalid cluster name '@ON': {DNS}"),
    call("path-300", "DELETE", "/v1/databases/" + "a" * 300, 422, f"name '{'a' * 300}': {DNS}"),
    call("path-nul", "DELETE", "/v1/databases/@on%00", 422, f"'@on\\x00': {DNS}"),
    call("path-newline", "DELETE", "/v1/databases/@on%0A", 422, f"'@on\\n': {DNS}"),
    call("path-name-newline", "DELETE", "/v1/databases/@on/@ns/victim%0A", 422, "request name 'victim\\n'"),
    call("path-unicode", "DELETE", "/v1/databases/@on%C3%A9", 422, f"'@oné': {DNS}"),
    call("path-not-utf8", "DELETE", "/v1/databases/@on%ff", 422, f"'@on\ufffd': {DNS}"),
    call("path-raw-byte", "DELETE", "/v1/databases/@on\xe9", 400, "Invalid HTTP request"),  # uvicorn's own
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "says"), BAD_INPUT)
def test_bad_input_is_a_4xx_naming_the_problem_and_changes_nothing(
    api: ApiProcess,
    targets: Targets,
    state: Watched,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str | None],
    status: int,
    says: str,
) -> None:
    content = fill(body, targets) if body is not None else None
    if content is not None and headers.get("Transfer-Encoding") == "chunked":
        content = chunked(content)
    if (declared := headers.get("Content-Length")) and declared.startswith("+"):
        headers = {**headers, "Content-Length": str(len(content or b"") + int(declared))}
    target = fill(path.encode("latin-1"), targets).decode("latin-1")
    with state.unchanged(f"{method} {path[:40]!r}"):
        answer = raw(api.url, request_bytes(method, target, content, headers))
        line = answer.line
        print(f"{method} {path[:40]!r}: {answer.status} in {answer.seconds:.3f} s: {line[:160]}")
        assert answer.status == status, f"expected {status} with {says!r}, got {answer}\n{api.tail()}"
        assert fill(says.encode(), targets).decode() in line, line
        assert "\n" not in line, line
        assert len(line) <= 600, line
        assert b"hunter2" not in answer.body
        assert answer.seconds < (15 if status == 408 else 5), f"answered after {answer.seconds:.1f} s"
    assert api.proc.poll() is None, f"fleetflow api exited:\n{api.tail()}"


def burst_kinds(t: Targets) -> list[Kind]:
    """What the burst sends, in turn: authorised reads and requests that are refused."""
    oversized = json.dumps(BIG).encode().replace(b"@off", t.off.encode())
    return [
        ("list", "GET", "/v1/databases", AUTH, None),
        ("read", "GET", f"/v1/databases/{t.on}", AUTH, None),
        ("request", "GET", f"/v1/databases/{t.on}/{t.namespace}/victim", AUTH, None),
        ("health", "GET", "/healthz", {}, None),
        ("no-token", "POST", "/v1/databases", {}, json.dumps({"cluster": t.off}).encode()),
        ("wrong-token", "DELETE", f"/v1/databases/{t.on}", {"Authorization": "Bearer wrong"}, None),
        ("bad-json", "POST", "/v1/databases", JSON, b'{"cluster": '),
        ("bad-name", "DELETE", "/v1/databases/%2e%2e", AUTH, None),
        ("oversized", "POST", "/v1/databases", JSON, oversized),
        ("deep", "POST", "/v1/databases", JSON, b"[" * 60_000),
    ]


EXPECTED = {
    "list": 200, "read": 200, "request": 200, "health": 200, "no-token": 401, "wrong-token": 401,
    "bad-json": 422, "bad-name": 422, "oversized": 413, "deep": 422,
}  # fmt: skip


def test_a_burst_is_answered_without_errors_or_leaked_descriptors(
    api: ApiProcess, targets: Targets, state: Watched
) -> None:
    process, port = psutil.Process(api.proc.pid), int(api.url.rsplit(":", 1)[1])
    start = descriptors(process, port)
    # A first burst fills the API's pools of Kubernetes connections (at most cpu_count * 5 per API
    # server); a leak is what the second one adds to the other descriptors.
    asyncio.run(burst(api.url, burst_kinds(targets), 300, 20))
    before = settled(process, port, 10_000)
    started = time.monotonic()
    with state.unchanged("the burst"):
        results = asyncio.run(burst(api.url, burst_kinds(targets), 300, 20))
        seconds = time.monotonic() - started
        right_after = descriptors(process, port)
        wrong = [(kind, outcome) for kind, outcome, _ in results if outcome != EXPECTED[kind]]
        assert not wrong, (
            f"{len(wrong)} of {len(results)} answers were not as expected: {wrong[:20]}\n{api.tail()}"
        )
    latencies = sorted(s for _, _, s in results)
    median, p95 = statistics.median(latencies), latencies[int(len(latencies) * 0.95) - 1]
    print(
        f"burst: {len(results)} requests, 20 at a time, in {seconds:.2f} s ({len(results) / seconds:.0f}/s); "
        f"latency median {median * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )
    after = settled(process, port, before.others + FD_MARGIN)
    print(
        "API process open fds (others + pooled Kubernetes connections): "
        + ", ".join(
            f"{d.others} + {sum(d.outbound.values())} {when}"
            for when, d in (
                ("at start", start),
                ("after a first burst", before),
                ("right after the measured one", right_after),
                ("settled", after),
            )
        )
    )
    assert after.inbound == 0, f"awaited the API to close every client connection within 30 s; {after}"
    assert after.others <= before.others + FD_MARGIN, (
        f"awaited the API's other open fds back to {before.others} (+{FD_MARGIN}) within 30 s: {after}"
    )
    pool = (os.cpu_count() or 1) * 5  # the Kubernetes client's default connection_pool_maxsize
    assert max(after.outbound.values(), default=0) <= pool, (
        f"more than {pool} connections to a server: {after}"
    )


def test_clients_that_never_finish_their_headers_are_let_go(api: ApiProcess) -> None:
    """Slowloris: 20 connections that send half a request each and wait are closed by the API."""
    process, port = psutil.Process(api.proc.pid), int(api.url.rsplit(":", 1)[1])
    before = descriptors(process, port)
    clients = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(20)]
    started = time.monotonic()
    try:
        for client in clients:
            client.sendall(f"GET /v1/databases HTTP/1.1\r\nHost: api.test\r\n{AUTH_LINE}".encode())
        held = descriptors(process, port)
        for client in clients:
            assert client.recv(1024) == b"", "the API answered half a request"  # b"": it closed
    except TimeoutError:
        raise AssertionError(
            "awaited the API to close connections with unfinished headers within 30 s"
        ) from None
    finally:
        for client in clients:
            client.close()
    seconds = time.monotonic() - started
    after = settled(process, port, before.others + FD_MARGIN)
    print(
        f"20 unfinished requests closed after {seconds:.1f} s; "
        f"API fds {before.fds} before, {held.fds} holding them ({held.inbound} open), {after.fds} after"
    )
    assert 8 < seconds < 20, f"closed after {seconds:.1f} s, expected the 10 s header deadline"
    assert after.inbound == 0, after
    assert after.others <= before.others + FD_MARGIN, after
