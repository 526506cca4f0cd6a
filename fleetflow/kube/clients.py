"""Clients built once and reused: one per (kubeconfig file, context), or per in-memory kubeconfig.

``client_for(context)`` builds the client once per (kubeconfig file, context) and hands out the
same one afterwards; a rewritten kubeconfig (new port after a fleet restart) yields a new one.
``client_from_config`` does the same for a kubeconfig held in memory (a registered cluster's
Secret), under a cache key the caller gives. urllib3 retries are fixed on the Configuration
before the ApiClient builds its connection pool; set afterwards they have no effect.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from fleetflow import config
from fleetflow.errors import ConfigError
from fleetflow.kube.client import KubeClient
from fleetflow.kube.kubeconfig import Kubeconfig, contexts

Retries = int | urllib3.Retry | None

_clients: dict[tuple[str, str, int], KubeClient] = {}
_clients_lock = threading.Lock()


def client_for(context: str, kubeconfig: str | Path | None = None) -> KubeClient:
    """The shared client for ``context`` (kubeconfig chosen as :func:`config.resolve_kubeconfig`)."""
    choice = config.resolve_kubeconfig(kubeconfig)
    path = choice.path
    known = contexts(path)  # raises a clear ConfigError for a missing or malformed file
    if context not in known:
        raise ConfigError(
            f"context {context!r} not found in kubeconfig {path} (from {choice.source}); "
            f"it has: {', '.join(known) or 'no contexts'}"
        )
    key = (str(path.resolve()), context, path.stat().st_mtime_ns)
    with _clients_lock:
        cached = _clients.get(key)
        if cached is not None:
            return cached
        try:
            api = k8s_config.new_client_from_config(
                config_file=str(path), context=context, persist_config=False
            )
        except (ConfigException, ValueError, TypeError, KeyError) as exc:
            # The library's message may quote the file; name the problem without its content.
            raise ConfigError(
                f"kubeconfig {path} context {context!r} is unusable ({type(exc).__name__})"
            ) from None
        client = KubeClient(api, context)
        _clients[key] = client
        return client


def client_from_config(
    config_dict: dict[str, Any],
    context: str,
    cache_key: str | None = None,
    *,
    retries: Retries = None,
) -> KubeClient:
    """A client from an in-memory kubeconfig (a registered cluster's Secret).

    With ``cache_key`` (e.g. the Secret's uid and resourceVersion) the client is reused until
    the credentials change. ``retries`` is urllib3's (a count or a ``Retry``; None: urllib3's
    default of 3 on connection and read errors); it is set before the connection pool is built,
    the only time it takes effect.
    """
    key = ("<memory>", f"{context}/{cache_key}/{retries!r}", 0)
    with _clients_lock:
        if cache_key and key in _clients:
            return _clients[key]
        configuration = k8s.Configuration()
        configuration.retries = retries
        try:
            api = k8s_config.new_client_from_config_dict(
                config_dict=config_dict,
                context=context,
                persist_config=False,
                client_configuration=configuration,
            )
        except (ConfigException, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(
                f"kubeconfig for context {context!r} is unusable ({type(exc).__name__})"
            ) from None
        client = KubeClient(api, context)
        if cache_key:
            _clients[key] = client
        return client


def probe(kubeconfig: Kubeconfig, timeout: float = 10.0) -> str:
    """The cluster's Kubernetes version (``/version``), through a client used only for this.

    One attempt: the caller's task retries, with backoff, and a probe of an unreachable
    cluster should say so at once rather than after the client's own retries.
    """
    api = client_from_config(kubeconfig.data, kubeconfig.context, retries=0)
    try:
        return str(api.version(timeout)["gitVersion"])
    finally:
        api.api.close()


def forget_clients() -> None:
    """Drop cached clients (after a fleet restart in tests)."""
    with _clients_lock:
        _clients.clear()
