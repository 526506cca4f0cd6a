"""Read events back from the Prefect server, waiting (with a deadline) for them to be stored."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client

from tests.support.eventually import eventually


def read_events(api: str, event: str, resource_id: str) -> list[dict[str, Any]]:
    body = {
        "filter": {
            "event": {"name": [event]},
            "resource": {"id": [resource_id]},
            "occurred": {"since": "2000-01-01T00:00:00Z"},
        },
        "limit": 50,
    }
    with get_client(sync_client=True) as client:
        response = client.request("POST", "/events/filter", json=body)
    return list(response.json()["events"])


def wait_for_events(
    api: str, event: str, resource_id: str, *, count: int = 1, timeout: float = 30.0, where: Any = None
) -> list[dict[str, Any]]:
    """Poll /events/filter until ``count`` matching events are stored (the server writes in batches)."""

    def stored() -> list[dict[str, Any]] | None:
        found = [e for e in read_events(api, event, resource_id) if where is None or where(e)]
        return found if len(found) >= count else None

    return eventually(stored, f"{count} {event} event(s) for {resource_id}", timeout)
