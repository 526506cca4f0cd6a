"""A ``/version`` answer that is not a Kubernetes version is a fleetflow APIError in one line.

The client library deserialises ``/version`` into a model: garbage there (not JSON, a list,
missing fields, ``null``) raised its own JSONDecodeError, pydantic ValidationError (many lines,
quoting the input) or AttributeError, outside fleetflow's error tree. The "API server" is a
local ``http.server`` answering 200 with the body under test.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from fleetflow import errors
from fleetflow.kube import client_from_config, probe
from fleetflow.kube.kubeconfig import Kubeconfig

TOKEN = "dG9rZW4tbm90LWZvci1lcnJvcnM"
MARKER = "garbage-marker"


class GarbageVersion(BaseHTTPRequestHandler):
    body: ClassVar[bytes] = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[GarbageVersion]]]:
    class Handler(GarbageVersion):
        body: ClassVar[bytes] = b""

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", Handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def kubeconfig(server: str) -> Kubeconfig:
    return Kubeconfig(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": {"token": TOKEN}}],
            "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "ctx",
        },
        "ctx",
    )


GARBAGE = {
    "not-json": f"<html>{MARKER}</html>".encode(),
    "a-list": f'["{MARKER}"]'.encode(),
    "fields-missing": f'{{"gitVersion": "{MARKER}"}}'.encode(),
    "wrong-types": f'{{"gitVersion": 5, "platform": ["{MARKER}"]}}'.encode(),
    "null": b"null",
}


def _assert_one_clean_line(err: errors.FleetflowError) -> None:
    message = str(err)
    assert isinstance(err, errors.APIError)
    assert isinstance(err, errors.PermanentError), "the same address gives the same answer"
    assert message.startswith("read /version of ctx: the answer is not a Kubernetes version ("), message
    assert message.endswith("is this the address of a Kubernetes API server?"), message
    assert "\n" not in message
    assert MARKER not in message, "the answer is not quoted"
    assert TOKEN not in message
    assert err.__cause__ is None
    assert err.__suppress_context__


@pytest.mark.parametrize("body", GARBAGE.values(), ids=GARBAGE.keys())
def test_a_malformed_version_answer_is_a_one_line_api_error(
    server: tuple[str, type[GarbageVersion]], body: bytes
) -> None:
    address, handler = server
    handler.body = body
    client = client_from_config(kubeconfig(address).data, "ctx", retries=0)
    try:
        with pytest.raises(errors.FleetflowError) as info:
            client.version(timeout=5)
    finally:
        client.api.close()
    _assert_one_clean_line(info.value)


def test_registering_probes_a_non_kubernetes_server_with_a_fleetflow_error(
    server: tuple[str, type[GarbageVersion]],
) -> None:
    address, handler = server
    handler.body = GARBAGE["fields-missing"]
    with pytest.raises(errors.FleetflowError) as info:
        probe(kubeconfig(address), timeout=5)
    _assert_one_clean_line(info.value)
