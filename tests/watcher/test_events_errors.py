"""How a failed emit is classified: a rejected event is permanent, an unavailable server temporary.

The "Prefect API" is a local ``http.server`` answering POST /events with a chosen status; the
real Prefect client talks to it, so the errors are the ones the client really raises.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

from fleetflow import errors, events

SECRET = "s3cr3t-password-value"


class PrefectStub(BaseHTTPRequestHandler):
    """404 to everything but POST /events... (the client then skips CSRF), which answers
    ``status`` with ``body``."""

    status: ClassVar[int] = 200
    body: ClassVar[dict[str, object]] = {}
    posts: ClassVar[list[object]] = []

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Retry-After", "0")  # the client retries 429/503 once; not after a pause
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).posts.append(json.loads(self.rfile.read(length) or b"null"))
        if self.path.startswith("/api/events"):
            self._answer(self.status, self.body)
        else:
            self._answer(404, {"detail": "Not Found"})

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def prefect_stub() -> Iterator[type[PrefectStub]]:
    class Handler(PrefectStub):
        posts: ClassVar[list[object]] = []

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with temporary_settings(
            {PREFECT_API_URL: f"http://127.0.0.1:{server.server_port}/api", PREFECT_CLIENT_MAX_RETRIES: 0}
        ):
            yield Handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def an_event() -> events.FleetEvent:
    return events.FleetEvent(
        events.CLUSTER_REGISTERED,
        events.cluster_resource("a", {"type": "app"}),
        events.event_id("uid-a", "registered"),
        {"cluster": "a", "labels": {"type": "app"}},
    )


def test_a_rejected_event_is_permanent_with_status_and_reason(prefect_stub: type[PrefectStub]) -> None:
    prefect_stub.status = 422
    prefect_stub.body = {  # Prefect's shape: it echoes the request body, which must not be quoted
        "exception_message": "Invalid request received.",
        "exception_detail": [
            {"loc": ["body", 0, "occurred"], "msg": "Input should be a valid datetime", "type": "x"}
        ],
        "request_body": [{"payload": {"password": SECRET}}],
    }
    with pytest.raises(errors.FleetflowError) as info:
        events.emit(an_event())
    err = info.value
    assert isinstance(err, errors.PermanentError)
    assert not isinstance(err, errors.TemporaryError)
    assert err.status == 422
    message = str(err)
    assert "fleetflow.cluster.registered for fleetflow.cluster.a" in message
    assert "HTTP 422 Unprocessable Entity" in message
    assert "body.0.occurred" in message
    assert SECRET not in message
    assert "\n" not in message
    assert len(prefect_stub.posts) == 1


@pytest.mark.parametrize("status", [500, 503, 429])
def test_an_unavailable_server_is_temporary_with_the_status(
    prefect_stub: type[PrefectStub], status: int
) -> None:
    prefect_stub.status = status
    prefect_stub.body = {"detail": "database is locked"}
    with pytest.raises(errors.TemporaryError) as info:
        events.emit(an_event())
    assert info.value.status == status
    assert f"HTTP {status}" in str(info.value)


def test_an_unreachable_server_is_temporary_with_the_message() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = {PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}
    with temporary_settings(unreachable), pytest.raises(errors.TemporaryError) as info:
        events.emit(an_event())
    message = str(info.value)
    assert "Prefect API unreachable (ConnectError: " in message
    assert "Connection refused" in message  # the client's own words, not only a type name


def test_reading_automation_failures_classifies_the_same_way(prefect_stub: type[PrefectStub]) -> None:
    prefect_stub.status = 401
    prefect_stub.body = {"detail": "Unauthorized"}
    with pytest.raises(errors.PermanentError, match="HTTP 401"):
        events.recent_failed_actions()
