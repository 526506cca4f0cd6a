"""Tasks of database-request (and of the label path, whose database is a request too): install
the Database CRD into a cluster, converge one request, list the requests to reconcile.

Converging reads the CNPG ``-app`` secret and writes the credentials, so it persists no result
and has no cache key; it returns an outcome in words, never a secret. It is idempotent, so a
retry (transient failures only) repeats checks, not work; it waits minutes for a database
anyway, so it rides out a restarting API server (``OUTAGE_RETRIES``).
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from fleetflow import events
from fleetflow.databases import converge, crd, inventory
from fleetflow.databases.spec import RequestRef
from fleetflow.registry import connect
from fleetflow.tasks.policy import OUTAGE_RETRIES, SECRET, api_task_options


@task(name="install-database-crd", **api_task_options())
def install_database_crd(cluster: str, mgmt_context: str | None) -> None:
    crd.install(connect(mgmt_context).client(cluster))


@task(name="converge-database-request", **SECRET, **api_task_options(retries=OUTAGE_RETRIES))
def converge_request(
    request: str,
    timeout_seconds: float,
    mgmt_context: str | None,
    template_dir: str | None = None,
    deliver_to: str | None = None,
) -> converge.Outcome:
    """Converge CLUSTER/NAMESPACE/NAME. When it (re)wrote the label path's ``pg-credentials``,
    ``fleetflow.credentials.published`` is emitted (deploy-app follows it)."""
    registry = connect(mgmt_context)
    ref = RequestRef.parse(request)
    outcome = converge.converge(
        registry,
        ref,
        timeout_seconds,
        template_dir=Path(template_dir) if template_dir else None,
        deliver_to=deliver_to,
    )
    if outcome.published:
        record = registry.get(ref.cluster)
        events.emit(
            events.FleetEvent(
                events.CREDENTIALS_PUBLISHED,
                events.database_resource(
                    ref.cluster, outcome.service_cluster, record.labels if record else None
                ),
                events.event_id(ref.cluster, outcome.delivered_to, "credentials", outcome.published),
                {
                    "cluster": ref.cluster,
                    "service_cluster": outcome.service_cluster,
                    "target": outcome.delivered_to,
                },
            )
        )
    return outcome


@task(name="list-database-requests", **api_task_options())
def requests_to_reconcile(mgmt_context: str | None) -> list[str]:
    return inventory.to_reconcile(connect(mgmt_context))
