"""Tasks of database-request: install the Database CRD into a cluster, converge one request.

Converging reads the CNPG ``-app`` secret and writes the credentials Secret, so it persists no
result and has no cache key; it returns an outcome in words, never a secret. It is idempotent,
so a retry (transient failures only) repeats checks, not work.
"""

from __future__ import annotations

from prefect import task

from fleetflow.databases import converge, crd, inventory
from fleetflow.databases.spec import RequestRef
from fleetflow.registry import connect
from fleetflow.tasks.policy import SECRET, api_task_options


@task(name="install-database-crd", **api_task_options())
def install_database_crd(cluster: str, mgmt_context: str | None) -> None:
    crd.install(connect(mgmt_context).client(cluster))


@task(name="converge-database-request", **SECRET, **api_task_options())
def converge_request(request: str, timeout_seconds: float, mgmt_context: str | None) -> converge.Outcome:
    return converge.converge(connect(mgmt_context), RequestRef.parse(request), timeout_seconds)


@task(name="list-database-requests", **api_task_options())
def requests_to_reconcile(mgmt_context: str | None) -> list[str]:
    return inventory.to_reconcile(connect(mgmt_context))
