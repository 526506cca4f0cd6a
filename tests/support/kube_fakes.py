"""Plain stand-ins for the kubernetes dynamic client, recording what KubeClient asks of it.

For unit tests of how KubeClient calls the library (which query parameters, how often); what an
API server does with those calls is for the integration tests, against real API servers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fleetflow.kube.client import KubeClient


class Result:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        return self.data


class Resource:
    """Records every call; answers lists with no items at resourceVersion 1."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _record(self, method: str, kwargs: dict[str, Any]) -> Result:
        self.calls.append((method, kwargs))
        if method == "get":
            return Result({"items": [], "metadata": {"resourceVersion": "1"}})
        return Result({"metadata": {"name": "x"}})

    def get(self, **kwargs: Any) -> Result:
        return self._record("get", kwargs)

    def delete(self, **kwargs: Any) -> Result:
        return self._record("delete", kwargs)

    def server_side_apply(self, **kwargs: Any) -> Result:
        return self._record("server_side_apply", kwargs)

    @property
    def status(self) -> Resource:
        return self


class Dynamic:
    """The dynamic client: one resource for every kind; watches yield ``watch_events``."""

    def __init__(self, watch_events: list[dict[str, Any]] | None = None) -> None:
        self.res = Resource()
        self.watch_events = watch_events or []
        self.watches = 0

    @property
    def resources(self) -> Dynamic:
        return self

    def get(self, api_version: str, kind: str) -> Resource:
        return self.res

    def watch(self, resource: Resource, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.watches += 1
        yield from self.watch_events


def kube(dynamic: Dynamic) -> KubeClient:
    client = KubeClient(api=None, context="test")  # type: ignore[arg-type]
    client._dynamic = dynamic  # type: ignore[assignment]
    return client


def job(name: str = "j") -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "ns"}}
