"""Body limits and one-line errors of the webhook API, in process (no fleet needed).

The integration module tests/security/test_api_security.py sends the same and worse to the
real ``fleetflow api`` process; these pin the rules themselves.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from fleetflow.databases.spec import DatabaseSpec
from fleetflow.errors import UsageError
from fleetflow.labels import validate_dns_label, validate_key, validate_value
from fleetflow.registry import Registry
from fleetflow.webhook import create_app
from fleetflow.webhook.limits import MAX_BODY, BodyProblem, check_json, header_timeout_protocol
from tests.support.eventually import eventually
from tests.support.webhook_api import call

TOKEN = "limits-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


class _NoClusters:
    def get(self, name: str) -> None:
        return None


@pytest.fixture
def app() -> FastAPI:
    registry: Any = _NoClusters()

    def factory() -> Registry:
        return registry  # type: ignore[no-any-return]

    return create_app(factory, TOKEN)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b'{"cluster": "' + b"a" * MAX_BODY + b'"}', 413, "is too large: the limit is 65536 bytes"),
        (b"[" * 100_000, 413, "of 100000 bytes is too large"),
        (b"[" * 60_000, 422, "request body is nested deeper than 32 levels"),
        (b'{"cluster": "x\xff"}', 422, "request body is not UTF-8: byte 0xff at offset 14"),
        (b'{"cluster": "a", "instances": NaN}', 422, "NaN is not a JSON number"),
        (b'{"cluster": "a", "instances": ' + b"9" * 5000 + b"}", 422, "4300 digits"),
        (b'{"cluster": "b", "cluster": "a"}', 422, "key 'cluster' appears twice"),
        (b'{"cluster": ', 422, "request body is not valid JSON: Expecting value"),
        (b'{"cluster": "a\\n"}', 422, "body.cluster: invalid cluster name 'a\\n'"),
        (b'{"cluster": "a", "namespace": "n", "name": "x", "instances": "3"}', 422, "body.instances: Input"),
        (b'{"cluster": "a", "password": "hunter2"}', 422, "body.password: Extra inputs are not permitted"),
    ],
)
def test_a_bad_body_is_a_one_line_4xx(app: FastAPI, body: bytes, status: int, says: str) -> None:
    response = call(app, "POST", "/v1/databases", content=body, headers=AUTH)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"detail"}
    assert says in response.json()["detail"]
    assert "\n" not in response.json()["detail"]
    assert "hunter2" not in response.text


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(app: FastAPI) -> None:
    async def never() -> Any:
        raise AssertionError("the body was read")
        yield b""  # pragma: no cover

    headers = {**AUTH, "Content-Length": str(10 * MAX_BODY)}
    response = call(app, "POST", "/v1/databases", content=never(), headers=headers)
    assert response.status_code == 413
    assert response.json() == {
        "detail": "request body of 655360 bytes is too large: the limit is 65536 bytes"
    }


def test_a_body_in_pieces_is_cut_off_at_the_limit(app: FastAPI) -> None:
    sent: list[int] = []

    async def pieces() -> Any:
        for _ in range(100):
            sent.append(1)
            yield b"[" * 16_384

    response = call(app, "POST", "/v1/databases", content=pieces(), headers=AUTH)
    assert response.status_code == 413
    assert response.json() == {"detail": "request body is too large: the limit is 65536 bytes"}


def test_an_unauthenticated_body_is_not_read(app: FastAPI) -> None:
    response = call(app, "POST", "/v1/databases", content=b"[" * 100_000)
    assert response.status_code == 401


def test_check_json_accepts_a_valid_request() -> None:
    check_json(b'{"cluster": "a", "namespace": "b", "name": "c", "instances": 3}')
    with pytest.raises(BodyProblem, match="nested deeper than 2 levels"):
        check_json(b'{"a": [[1]]}', max_depth=2)


@pytest.mark.parametrize(
    "check", [validate_dns_label, lambda v: validate_key(v), lambda v: validate_value("k", v)]
)
def test_a_name_with_a_trailing_newline_is_invalid(check: Any) -> None:
    with pytest.raises(UsageError):
        check("abc\n")


@pytest.mark.parametrize(
    ("field", "value"), [("database", "app\n"), ("storage", "1Gi\n"), ("secretName", "x-credentials\n")]
)
def test_a_spec_field_with_a_trailing_newline_is_invalid(field: str, value: str) -> None:
    with pytest.raises(UsageError, match=f"spec.{field}"):
        DatabaseSpec.from_spec("orders", {field: value})


@contextmanager
def serving(app: FastAPI, header_seconds: float) -> Iterator[int]:
    """``app`` under uvicorn with the header deadline, on a free loopback port, in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, log_config=None, lifespan="off", http=header_timeout_protocol(header_seconds)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:

        def started() -> bool:
            if not thread.is_alive():
                pytest.fail("uvicorn died while starting")
            return bool(server.started)

        eventually(started, "uvicorn to start", 30)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def closed_after(port: int, data: bytes) -> tuple[bytes, float]:
    """Send ``data``, read until the server closes: (what it answered, seconds until it closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
        client.sendall(data)
        started, received = time.monotonic(), b""
        while chunk := client.recv(4096):
            received += chunk
        return received, time.monotonic() - started


def test_a_request_whose_headers_never_end_is_cut_off(app: FastAPI) -> None:
    with serving(app, header_seconds=0.5) as port:
        answer, seconds = closed_after(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert answer == b""
        assert 0.4 < seconds < 5, seconds
        # A request that completes its headers is answered, then its idle connection let go too.
        answer, seconds = closed_after(port, b"GET /v1/databases HTTP/1.1\r\nHost: x\r\n\r\nGET /v1")
        assert answer.startswith(b"HTTP/1.1 401 ")
        assert seconds < 5, seconds
