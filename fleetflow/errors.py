"""fleetflow's exception tree.

Every error a user can see is a :class:`FleetflowError`; the CLI prints its message on one
line and exits non-zero. Nothing below leaks the kubernetes client's own exception types:
``fleetflow.kube`` translates them at the boundary, the way kopf hides its client library.

    FleetflowError
    ├── UsageError            bad input from the user (name, label, flag); never retried
    ├── ConfigError           configuration or kubeconfig cannot be used
    ├── BootstrapError        binaries for the local fleet cannot be found or built
    ├── FleetError            the local fleet cannot be started, stopped or inspected
    └── APIError              a Kubernetes API call failed (status, reason, message)
        ├── PermanentError    retrying cannot help (4xx other than 409/429)
        │   ├── APINotFoundError      404
        │   ├── APIForbiddenError     401/403
        │   ├── APIInvalidError       400/422: the API server rejected the object
        │   └── ApplyConflictError    409 from server-side apply: another manager owns a field
        └── TemporaryError    worth retrying with backoff (connection errors, 5xx, 409, 429)
            ├── APIConflictError      409
            ├── APIUnavailableError   connection refused/reset, timeouts, 5xx, 429
            └── CommandTimeoutError   an external command (helm) ran out of time
"""

from __future__ import annotations


class FleetflowError(Exception):
    """Base of every error fleetflow raises on purpose."""


class UsageError(FleetflowError):
    """The user asked for something malformed; the message names the problem."""


class ConfigError(FleetflowError):
    """Configuration (kubeconfig, context, settings) cannot be used."""


class BootstrapError(FleetflowError):
    """Binaries for the local fleet cannot be found or built."""


class FleetError(FleetflowError):
    """The local fleet cannot be started, stopped or inspected."""


class APIError(FleetflowError):
    """A Kubernetes API call failed."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class PermanentError(APIError):
    """Retrying cannot help."""


class TemporaryError(APIError):
    """Transient; the caller may retry with backoff."""


class APINotFoundError(PermanentError):
    """404 Not Found."""


class APIForbiddenError(PermanentError):
    """401 Unauthorized or 403 Forbidden."""


class APIInvalidError(PermanentError):
    """400/422: the API server rejected the request body."""


class APIConflictError(TemporaryError):
    """409 Conflict."""


class APIGoneError(TemporaryError):
    """410 Gone: the resourceVersion a watch resumed from was compacted away; relist."""


class APIUnavailableError(TemporaryError):
    """The API server could not be reached, or answered 5xx/429."""


class CommandTimeoutError(TemporaryError):
    """An external command (helm) did not finish in time and was killed.

    Temporary: a slow API server or registry is the usual cause, so the caller's retry with
    backoff may succeed. The message names the command, never its arguments' content.
    """


class ApplyConflictError(PermanentError):
    """409 from server-side apply: a field in the body is owned by another field manager with a
    different value. Unlike an optimistic-concurrency 409, retrying gets the same answer; the
    message (the API server's) names the manager and the fields."""
