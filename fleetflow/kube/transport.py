"""Raw Kubernetes HTTP for watches: an ``httpx.AsyncClient`` made from the client's Configuration.

The informers (:mod:`fleetflow.kube.informer`) list and watch over asyncio, so that every watch
of a process shares one event-loop thread. The kubernetes client's Configuration, built from
the kubeconfig by :mod:`fleetflow.kube.clients`, already holds the server address, the CA, the
client certificate and the token; this module turns it into a TLS context and an auth header,
so a kubeconfig means the same thing to both. Failures are fleetflow errors
(:func:`fleetflow.kube.errors.error_for`), classified like the client library's.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from kubernetes import client as k8s

from fleetflow.errors import APIError, APIGoneError, APIUnavailableError
from fleetflow.kube.errors import error_for, server_message

CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 30.0  # a list, or one read of a watch beyond its server-side timeout
WATCH_READ_SLACK = 15.0  # a watch's read timeout is its timeoutSeconds plus this


class _ConfigurationAuth(httpx.Auth):
    """The Configuration's token (refreshed by its hook, as the client library does) or basic auth."""

    def __init__(self, configuration: k8s.Configuration) -> None:
        self.configuration = configuration

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        cfg = self.configuration
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        token = cfg.get_api_key_with_prefix("authorization")
        if token:
            request.headers["Authorization"] = token
        elif cfg.username or cfg.password:
            request.headers["Authorization"] = str(cfg.get_basic_auth_token())
        yield request


def tls_context(configuration: k8s.Configuration) -> ssl.SSLContext:
    """Verification and client certificate as the kubeconfig says."""
    cfg = configuration
    if cfg.verify_ssl:
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if cfg.assert_hostname is False:
            context.check_hostname = False
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    return context


def async_client(configuration: k8s.Configuration) -> httpx.AsyncClient:
    """An AsyncClient for the API server of ``configuration``; every call has a timeout."""
    host = configuration.host.rstrip("/")
    return httpx.AsyncClient(
        base_url=host,
        verify=tls_context(configuration) if host.startswith("https") else False,
        auth=_ConfigurationAuth(configuration),
        timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT),
        headers={"Accept": "application/json", "User-Agent": "fleetflow"},
    )


def failure(exc: Exception, action: str) -> APIError:
    """The fleetflow error for a failed request doing ``action``."""
    if isinstance(exc, httpx.HTTPStatusError):
        message, reason = server_message(exc.response.content)
        return error_for(exc.response.status_code, message, reason, action)
    return APIUnavailableError(f"{action}: cannot reach the API server ({type(exc).__name__})")


@asynccontextmanager
async def http_errors(action: str) -> AsyncIterator[None]:
    """Re-raise httpx failures as fleetflow API errors describing ``action``."""
    try:
        yield
    except (httpx.HTTPError, OSError) as exc:
        raise failure(exc, action) from None


async def get_json(http: httpx.AsyncClient, path: str, params: dict[str, str], action: str) -> dict[str, Any]:
    async with http_errors(action):
        response = await http.get(path, params=params)
        if response.is_error:
            await response.aread()
            response.raise_for_status()
        body = response.json()
    if not isinstance(body, dict):
        raise APIUnavailableError(f"{action}: the answer is not a JSON object")
    return body


async def watch_lines(
    http: httpx.AsyncClient, path: str, params: dict[str, str], timeout_seconds: int, action: str
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The events ``(type, object)`` of one watch request; an ERROR event is raised (410: the
    resourceVersion is gone, :class:`APIGoneError`; anything else: temporary)."""
    read = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT, read=timeout_seconds + WATCH_READ_SLACK)
    async with http_errors(action), http.stream("GET", path, params=params, timeout=read) as response:
        if response.is_error:
            await response.aread()
            response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                raise APIUnavailableError(f"{action}: a watch line is not JSON") from None
            kind, obj = str(event.get("type", "")), event.get("object") or {}
            if kind == "ERROR":
                code = obj.get("code")
                text = f"{action}: {obj.get('message', '') or obj.get('reason', '') or 'ERROR event'}"
                if code == 410:
                    raise APIGoneError(text, status=410, reason=str(obj.get("reason", "")))
                raise APIUnavailableError(text, status=code, reason=str(obj.get("reason", "")))
            yield kind, obj
