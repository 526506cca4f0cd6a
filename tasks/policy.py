"""Retry policy shared by every task that talks to an API: transient failures only.

Connection errors, 5xx, 409 and 429 are :class:`fleetflow.errors.TemporaryError` and are
retried with exponential backoff and jitter; anything else (a validation error, a 404, a 422)
fails the task at once, because retrying cannot change the answer.
"""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from fleetflow.errors import TemporaryError

RETRIES = 3
RETRY_DELAYS = exponential_backoff(backoff_factor=1)
JITTER = 0.5


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn``: retry only when the failure is a TemporaryError."""
    return isinstance(getattr(state, "data", None), TemporaryError)


def api_task_options() -> dict[str, Any]:
    """Keyword arguments for ``@task`` on tasks that call a Kubernetes API."""
    return {
        "retries": RETRIES,
        "retry_delay_seconds": RETRY_DELAYS,
        "retry_jitter_factor": JITTER,
        "retry_condition_fn": transient_only,
    }


# Tasks that see credentials (a kubeconfig, a password): no result storage, no cache key.
SECRET: dict[str, Any] = {"persist_result": False, "cache_policy": NO_CACHE}
