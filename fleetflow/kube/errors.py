"""Translate the kubernetes client's exceptions into fleetflow's error tree.

Status codes decide the class: 409 and 429 and 5xx are temporary (retry with backoff), 410 is
"relist" (a watch's resourceVersion is gone), other 4xx are permanent. Connection failures are
temporary. Messages keep the API server's own reason, which is what a user needs to fix a
rejected object.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError

from fleetflow.errors import (
    APIConflictError,
    APIError,
    APIForbiddenError,
    APIGoneError,
    APIInvalidError,
    APINotFoundError,
    APIUnavailableError,
    PermanentError,
)


def server_message(body: object) -> tuple[str, str]:
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        status = json.loads(body) if isinstance(body, str) else {}
    except ValueError:
        return str(body)[:300], ""
    if not isinstance(status, dict):
        return "", ""
    return str(status.get("message", "")), str(status.get("reason", ""))


_TYPED_PATCH_FAILURE = "failed to create typed patch object"


def translate(exc: Exception, action: str) -> APIError:
    if isinstance(exc, DynamicApiError | ApiException):
        code, body = exc.status, exc.body
    else:
        return APIUnavailableError(f"{action}: cannot reach the API server ({type(exc).__name__})")
    message, reason = server_message(body)
    return error_for(code, message, reason, action)


def error_for(code: int | None, message: str, reason: str, action: str) -> APIError:
    """The fleetflow error for an API server's answer ``code`` with its Status ``message`` and
    ``reason`` (from the client library or from raw HTTP: one classification for both)."""
    text = f"{action}: {message or reason or f'HTTP {code}'}"
    cls: type[APIError]
    if code == 500 and message.startswith(_TYPED_PATCH_FAILURE):
        # Server-side apply answers 500 when the body does not fit the schema (a string
        # where an integer belongs); retrying cannot fix the body, so it is invalid input.
        cls, code = APIInvalidError, 422
    elif code == 404:
        cls = APINotFoundError
    elif code in (401, 403):
        cls = APIForbiddenError
    elif code in (400, 422):
        cls = APIInvalidError
    elif code == 409:
        cls = APIConflictError
    elif code == 410:
        # A watch asked to resume from a resourceVersion the server no longer serves: compacted,
        # or older than the watch cache of an API server that restarted meanwhile. The request
        # itself gets 410 (not an ERROR event in the stream); the caller relists.
        cls = APIGoneError
    elif code == 429 or (code is not None and code >= 500):
        cls = APIUnavailableError
    else:
        cls = PermanentError
    return cls(text, status=code, reason=reason)


@contextmanager
def api_errors(action: str) -> Iterator[None]:
    """Re-raise client exceptions as fleetflow API errors describing ``action``."""
    try:
        yield
    except (ApiException, DynamicApiError) as exc:
        raise translate(exc, action) from None
    except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
        raise translate(exc, action) from None
