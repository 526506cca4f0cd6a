"""An in-memory management cluster for the label watcher: its state ConfigMap and its clusters."""

from __future__ import annotations

from typing import Any

from fleetflow.watcher import STATE_NAME, STATE_NAMESPACE


class Mgmt:
    """Just enough of KubeClient for LabelWatcher.resync: one ConfigMap and a list of clusters."""

    def __init__(self, state: dict[str, str], clusters: list[dict[str, Any]]) -> None:
        self.state = state
        self.clusters = clusters
        self.patches: list[dict[str, Any]] = []

    def get_or_none(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Any:
        assert (kind, name, namespace) == ("ConfigMap", STATE_NAME, STATE_NAMESPACE)
        return {"metadata": {"name": name}, "data": dict(self.state)}

    def list(self, api_version: str, kind: str, *args: Any, **kwargs: Any) -> tuple[list[Any], str]:
        return list(self.clusters), "100"

    def merge_patch(
        self, api_version: str, kind: str, name: str, namespace: str | None, patch: dict[str, Any]
    ) -> dict[str, Any]:
        self.patches.append(patch)
        return {}


def cluster(name: str, uid: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": uid, "resourceVersion": "7", "labels": labels}}
