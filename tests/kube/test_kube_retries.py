"""urllib3 retries given to a client are in effect: they are set before its pool is built.

A probe must make one attempt (its caller retries with backoff). The "API server" is a local
``http.server`` that drops the first connection without an answer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import urllib3

from fleetflow import errors
from fleetflow.kube import client_from_config, probe
from fleetflow.kube.kubeconfig import Kubeconfig


class FlakyApiServer(BaseHTTPRequestHandler):
    """Drops the first connection without an answer (a reset), then answers /version."""

    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        if len(self.requests) == 1:
            self.close_connection = True
            return
        fields = ("major", "minor", "gitCommit", "gitTreeState", "buildDate", "goVersion", "compiler")
        data = json.dumps(
            {**dict.fromkeys(fields, "x"), "gitVersion": "v1.31.0", "platform": "linux/amd64"}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def flaky_server() -> Iterator[tuple[str, type[FlakyApiServer]]]:
    class Handler(FlakyApiServer):
        requests: ClassVar[list[str]] = []

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", Handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def kubeconfig(server: str) -> Kubeconfig:
    return Kubeconfig(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "ctx",
        },
        "ctx",
    )


def test_a_probe_does_not_retry_inside_the_client(flaky_server: tuple[str, type[FlakyApiServer]]) -> None:
    """The probe's caller retries with backoff; the client's own (urllib3) retries must be off,
    and they are only if set before the client builds its connection pool."""
    server, handler = flaky_server
    with pytest.raises(errors.TemporaryError):
        probe(kubeconfig(server), timeout=5)
    assert len(handler.requests) == 1, handler.requests


def test_retries_given_to_a_client_are_in_its_connection_pool() -> None:
    client = client_from_config(kubeconfig("http://127.0.0.1:1").data, "ctx", retries=0)
    try:
        in_pool = client.api.rest_client.pool_manager.connection_pool_kw["retries"]
        assert urllib3.Retry.from_int(in_pool).total == 0
    finally:
        client.api.close()


def test_a_client_retries_a_dropped_connection_by_default(
    flaky_server: tuple[str, type[FlakyApiServer]],
) -> None:
    server, handler = flaky_server
    client = client_from_config(kubeconfig(server).data, "ctx")
    try:
        assert client.version(timeout=5)["gitVersion"] == "v1.31.0"
    finally:
        client.api.close()
    assert len(handler.requests) == 2
