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

RETRIES = 3  # 1, 2 and 4 s apart: about 7 s (up to 10 s with jitter) before a task gives up
RETRY_DELAYS = exponential_backoff(backoff_factor=1)
JITTER = 0.5
# For steps of a run that waits minutes anyway (provisioning): 1 to 16 s apart, about 31 s in
# all, so a restarting API server (the local fleet's takes up to 12 s under load) is ridden out.
OUTAGE_RETRIES = 5


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn``: retry only when the failure is a TemporaryError."""
    return isinstance(getattr(state, "data", None), TemporaryError)


def api_task_options(retries: int = RETRIES) -> dict[str, Any]:
    """Keyword arguments for ``@task`` on tasks that call a Kubernetes API."""
    return {
        "retries": retries,
        "retry_delay_seconds": RETRY_DELAYS,
        "retry_jitter_factor": JITTER,
        "retry_condition_fn": transient_only,
    }


# Tasks that see credentials (a kubeconfig, a password): no result storage, no cache key.
SECRET: dict[str, Any] = {"persist_result": False, "cache_policy": NO_CACHE}
