"""The webhook API for tests: served by a real uvicorn on loopback (:func:`running`), or called
in process through its ASGI app (:func:`call`)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from tests.support.eventually import eventually


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` on a free 127.0.0.1 port in a thread; yields its base URL; stops it after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))  # bound here and handed over: no race for the port
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_config=None, log_level="info", ws="none", lifespan="off", proxy_headers=False
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"api-{port}")
        thread.start()
        try:

            def started() -> bool:
                if not thread.is_alive():
                    pytest.fail("the API server died while starting")
                return bool(server.started)

            eventually(started, "the API server to start", 30)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(30)
            assert not thread.is_alive(), "the API server did not stop"
    finally:
        sock.close()


def call(app: FastAPI, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to ``app`` in process (starlette's TestClient wants a package we do not use)."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())
