"""Prefect events fleetflow emits: the one module of the core that imports prefect.

Events are POSTed to the Prefect API synchronously, so that a caller knows an event was
accepted before it records it as emitted (a background websocket sender could lose it in a
crash). Ids are deterministic (uuid5 of the object's uid and the change), so a replay after a
restart is recognised by the server as the same event and dropped.

Resource ids are shaped ``fleetflow.<kind>.<name>``; every label of a cluster is also a
resource label ``fleetflow.label.<key>`` so that automations can ``match`` on it.

Failures are classified like the Kubernetes API's: a server that cannot be reached or answers
5xx, 408 or 429 is a :class:`TemporaryError` (worth retrying with backoff); any other 4xx means
the request itself was refused (an invalid event, missing authorisation) and is a
:class:`PermanentError`, because sending it again gets the same answer. Messages carry the
status, its reason phrase and the failing field's location, never the response body: Prefect
echoes the request there, and an event's payload is not for logs.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.events import Event
from prefect.settings import get_current_settings

from fleetflow.backoff import Backoff, retry
from fleetflow.errors import APIError, ConfigError, PermanentError, TemporaryError

log = logging.getLogger("fleetflow.events")

NAMESPACE = uuid.UUID("5d0f6d1e-9c57-4c35-9a53-6f1e5b0c7a10")

CLUSTER_REGISTERED = "fleetflow.cluster.registered"
CLUSTER_LABELED = "fleetflow.cluster.labeled"
CLUSTER_DEREGISTERED = "fleetflow.cluster.deregistered"
DATABASE_READY = "fleetflow.database.ready"
CREDENTIALS_PUBLISHED = "fleetflow.credentials.published"
CREDENTIALS_ROTATED = "fleetflow.credentials.rotated"  # a label-path database's -app Secret changed
DATABASE_REQUEST_CHANGED = "fleetflow.database-request.changed"  # a Database object to converge


def event_id(*parts: str) -> uuid.UUID:
    """The same parts give the same id, always: replays are deduplicated by the server."""
    return uuid.uuid5(NAMESPACE, "/".join(parts))


def cluster_resource(name: str, labels: Mapping[str, str]) -> dict[str, str]:
    resource = {"prefect.resource.id": f"fleetflow.cluster.{name}", "prefect.resource.name": name}
    resource.update({f"fleetflow.label.{k}": v for k, v in sorted(labels.items())})
    return resource


def database_resource(
    cluster: str, service_cluster: str, labels: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A cluster's database; with ``labels``, the cluster's labels as ``fleetflow.label.<key>``,
    so that an automation can match on them (deploy-app only where ``type=app``)."""
    resource = {
        "prefect.resource.id": f"fleetflow.database.{cluster}",
        "prefect.resource.name": cluster,
        "fleetflow.cluster": cluster,
        "fleetflow.service-cluster": service_cluster,
    }
    resource.update({f"fleetflow.label.{k}": v for k, v in sorted((labels or {}).items())})
    return resource


def request_resource(cluster: str, namespace: str, name: str) -> dict[str, str]:
    """A Database request object (``fleetflow.database-request.<cluster>.<namespace>.<name>``)."""
    return {
        "prefect.resource.id": f"fleetflow.database-request.{cluster}.{namespace}.{name}",
        "prefect.resource.name": f"{cluster}/{namespace}/{name}",
        "fleetflow.cluster": cluster,
    }


@dataclass(frozen=True)
class FleetEvent:
    event: str
    resource: dict[str, str]
    id: uuid.UUID
    payload: dict[str, Any] = field(default_factory=dict)
    occurred: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


def require_api() -> str:
    """The Prefect API URL; emitting to a throwaway ephemeral server would lose every event."""
    url = get_current_settings().api.url
    if not url:
        raise ConfigError(
            "no Prefect server configured: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)"
        )
    return str(url)


def _body(event: FleetEvent) -> dict[str, Any]:
    fields = {
        "id": event.id,
        "event": event.event,
        "resource": event.resource,
        "payload": event.payload,
        "occurred": event.occurred,
    }
    return dict(Event.model_validate(fields).model_dump(mode="json"))


def emit(event: FleetEvent) -> None:
    """Send one event and return once the server accepted it."""
    emit_many([event])


def emit_many(batch: list[FleetEvent]) -> None:
    """Send events in one request, in order, and return once the server accepted them all.

    A burst of label changes costs one round trip instead of one per change.
    """
    if not batch:
        return
    require_api()
    first = batch[0]
    more = f" and {len(batch) - 1} more" if len(batch) > 1 else ""
    what = f"emit {first.event} for {first.resource['prefect.resource.id']}{more}"
    try:
        with get_client(sync_client=True) as client:
            client.request("POST", "/events", json=[_body(e) for e in batch])
    except Exception as exc:
        raise failure(exc, what) from None


EMIT_BACKOFF_MAX = 5.0  # seconds between attempts to reach a Prefect server that is down
EMIT_BACKOFF = Backoff(first=0.5, cap=EMIT_BACKOFF_MAX)  # no budget: until accepted or stopped


def emit_until_accepted(
    emit: Callable[[list[FleetEvent]], None], batch: list[FleetEvent], stop: threading.Event
) -> None:
    """Send ``batch`` with ``emit``; a Prefect server that cannot be reached (stopped, restarting:
    a :class:`TemporaryError`) is tried again with the platform's backoff (``EMIT_BACKOFF``, at
    most ``EMIT_BACKOFF_MAX`` between attempts) until it accepts the batch or ``stop`` is set
    (then the error is raised). A refused batch raises at once.

    What the watchers use: their events describe changes already past, which a watch does not
    show twice, so one that gives up on a stopped server loses them (a rotated password would
    not be delivered until the next reconcile) or, relisting with a long backoff, delays them.
    """
    what = "Prefect did not take the events (nothing recorded as emitted until it does)"
    retry(what, lambda: emit(batch), EMIT_BACKOFF, stop=stop)


def transient_status(code: int) -> bool:
    """Whether a Prefect API answer with HTTP ``code`` is worth retrying: 408, 429 or 5xx."""
    return code in (408, 429) or code >= 500


def failure(exc: Exception, what: str) -> APIError:
    """The fleetflow error for a failed Prefect API request doing ``what`` (see the module doc)."""
    if isinstance(exc, httpx.HTTPStatusError):
        code, phrase = exc.response.status_code, exc.response.reason_phrase
        text = f"{what}: Prefect API answered HTTP {code} {phrase}".rstrip() + _where(exc.response)
        if transient_status(code):
            return TemporaryError(text, status=code, reason=phrase)
        return PermanentError(text, status=code, reason=phrase)
    if isinstance(exc, httpx.TransportError | OSError):  # refused, reset, timed out, DNS
        detail = " ".join(str(exc).split())[:200]
        return TemporaryError(f"{what}: Prefect API unreachable ({type(exc).__name__}: {detail})")
    # Anything else (the client's own failures) is taken as passing; named by type only.
    return TemporaryError(f"{what}: Prefect API request failed ({type(exc).__name__})")


def _where(response: httpx.Response) -> str:
    """Where a 422 found the request invalid (``body.0.occurred``), or a short string detail:
    never values, which may echo the request."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    detail = body.get("exception_detail", body.get("detail"))
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = ".".join(str(part) for part in detail[0].get("loc") or [])
        return f" (invalid: {loc})" if loc else ""
    if isinstance(detail, str) and detail:
        return f" ({' '.join(detail.split())[:120]})"
    return ""


AUTOMATION_ACTION_FAILED = "prefect.automation.action.failed"


def recent_failed_actions(hours: float = 24.0, limit: int = 20) -> list[dict[str, Any]]:
    """Automation actions that failed (e.g. a template referencing a missing key creates no run;
    this event is the only trace), newest first: what ``fleetflow status`` shows."""
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)).isoformat()
    body = {
        "filter": {"event": {"name": [AUTOMATION_ACTION_FAILED]}, "occurred": {"since": since}},
        "limit": limit,
    }
    try:
        with get_client(sync_client=True) as client:
            found = client.request("POST", "/events/filter", json=body).json().get("events", [])
    except Exception as exc:  # say so instead of hiding failures
        raise failure(exc, "read automation failures") from None
    return sorted(found, key=lambda e: e.get("occurred", ""), reverse=True)
