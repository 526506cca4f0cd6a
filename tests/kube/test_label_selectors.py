"""Label selectors go to the API server (KubeClient.list, Registry.list), typed as Selector.

The client library and the management cluster are recording stand-ins: what the server does
with the selector is shown by tests/kube/test_kube_client_real.py.
"""

from __future__ import annotations

from typing import Any

from fleetflow.labels import Selector
from fleetflow.registry import Registry
from tests.support.kube_fakes import Dynamic, kube


class Mgmt:
    def __init__(self) -> None:
        self.selectors: list[object] = []

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: Any = None
    ) -> Any:
        self.selectors.append(label_selector)
        items = [{"metadata": {"name": n, "labels": {"type": "services"}}} for n in ("b", "a")]
        return items, "1"


def test_list_with_a_selector_asks_the_server_for_matching_clusters_only() -> None:
    mgmt = Mgmt()
    records = Registry(mgmt).list(Selector.parse("type=services"))  # type: ignore[arg-type]
    assert [str(s) for s in mgmt.selectors] == ["type=services"]
    assert [r.name for r in records] == ["a", "b"]  # sorted, as without a selector


def test_list_without_a_selector_asks_for_all() -> None:
    mgmt = Mgmt()
    Registry(mgmt).list()  # type: ignore[arg-type]
    assert mgmt.selectors == [None]


def test_list_sends_a_typed_label_selector_to_the_server() -> None:
    dynamic = Dynamic()
    kube(dynamic).list("v1", "Service", "ns", Selector.parse("type=services,!retired"))
    assert dynamic.res.calls[0][1]["label_selector"] == "type=services,!retired"
