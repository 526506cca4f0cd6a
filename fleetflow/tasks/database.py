"""Tasks of the label path (provision-database, deprovision-database): the label's Database
request applied or released, and ``fleetflow.database.ready`` announced.

Each reads the FleetCluster once and passes it down. Converging the request is the same task
database-request runs (:func:`fleetflow.tasks.databases.converge_request`).
"""

from __future__ import annotations

from prefect import task

from fleetflow import events
from fleetflow.databases import label, provision
from fleetflow.databases.spec import RequestRef
from fleetflow.databases.status import Outcome
from fleetflow.registry import connect
from fleetflow.tasks.policy import api_task_options


@task(name="request-label-database", **api_task_options())
def request_label_database(
    cluster: str, instances: int, deletion_policy: str, mgmt_context: str | None
) -> str | None:
    """Apply the Database ``fleetflow/CLUSTER`` on CLUSTER (its label asks for it); returns it as
    CLUSTER/NAMESPACE/NAME, or None when the cluster's labels no longer ask."""
    registry = connect(mgmt_context)
    ref = label.request(registry, registry.require(cluster), instances, deletion_policy)
    return str(ref) if ref is not None else None


@task(name="release-label-database", **api_task_options())
def release_label_database(cluster: str, deletion_policy: str, mgmt_context: str | None) -> Outcome:
    """The label is gone: the label's Database is deleted and finalised with ``deletion_policy``."""
    registry = connect(mgmt_context)
    return label.release(registry, registry.get(cluster), cluster, deletion_policy)


@task(name="announce-database-ready", **api_task_options())
def announce_database_ready(outcome: Outcome, mgmt_context: str | None) -> None:
    """Emit ``fleetflow.database.ready``; its id changes only with the Cluster (uid/generation)."""
    ref = RequestRef.parse(outcome.request)
    placed = provision.Placed.of(ref, outcome.service_cluster)
    live = provision.get(connect(mgmt_context).client(placed.service_cluster), placed)
    version = f"{live.meta.uid}/{live.meta.generation}" if live else "absent"
    events.emit(
        events.FleetEvent(
            events.DATABASE_READY,
            events.database_resource(ref.cluster, placed.service_cluster),
            events.event_id(ref.cluster, placed.service_cluster, "database-ready", version),
            {
                "cluster": ref.cluster,
                "service_cluster": placed.service_cluster,
                "namespace": placed.namespace,
                "name": placed.name,
                "endpoint": outcome.endpoint,
            },
        )
    )
