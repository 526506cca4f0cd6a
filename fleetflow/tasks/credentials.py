"""Tasks that touch credentials: read and write in one task, never persisted, never cached.

A password is read from the source secret and written to its target inside one task run, so
it never travels as a task result or parameter; only the outcome (changed or not) is returned.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from fleetflow import events
from fleetflow.dbaas import app, credentials, placement, provision
from fleetflow.dbaas.names import APP_NAMESPACE, DELIVERY_ANNOTATION
from fleetflow.errors import FleetflowError, PermanentError
from fleetflow.registry import connect
from fleetflow.tasks.policy import SECRET, api_task_options


@task(name="deliver-credentials", **SECRET, **api_task_options())
def deliver_credentials(
    cluster: str, deliver_to: str | None, mgmt_context: str | None
) -> dict[str, str | bool]:
    """Copy the credentials to ``deliver_to`` ("mgmt" or "workload"; None: where they went last
    time, recorded on the FleetCluster, else "mgmt")."""
    registry = connect(mgmt_context)
    if deliver_to is None:
        record = registry.get(cluster)
        deliver_to = (record.annotations.get(DELIVERY_ANNOTATION) if record else None) or "mgmt"
    service_cluster = placement.recorded_service_cluster(registry, cluster)
    if service_cluster is None:
        raise PermanentError(f"cluster {cluster!r} has no database: run provision-database first")
    db = provision.database_of(cluster, service_cluster)
    creds, endpoint = credentials.read(registry.client(service_cluster), db)
    if deliver_to == "workload":
        target, namespace = registry.client(cluster), APP_NAMESPACE
    else:
        target, namespace = registry.mgmt, cluster
    changed = credentials.publish(target, namespace, creds, endpoint)
    try:
        other = (
            (registry.mgmt, cluster)
            if deliver_to == "workload"
            else (registry.client(cluster), APP_NAMESPACE)
        )
        changed = credentials.refresh(*other, creds, endpoint) or changed
    except FleetflowError as exc:  # the delivery asked for is done; reconcile repairs the other copy
        get_run_logger().warning("a stale copy of %s's credentials was not rewritten: %s", cluster, exc)
    record = registry.get(cluster)
    if record is not None and record.annotations.get(DELIVERY_ANNOTATION) != deliver_to:
        registry.annotate(cluster, {DELIVERY_ANNOTATION: deliver_to})
    if changed:
        events.emit(
            events.FleetEvent(
                events.CREDENTIALS_PUBLISHED,
                events.database_resource(cluster, service_cluster, record.labels if record else None),
                events.event_id(cluster, deliver_to, "credentials", creds.source),
                {
                    "cluster": cluster,
                    "service_cluster": service_cluster,
                    "target": f"{deliver_to}:{namespace}",
                },
            )
        )
    return {
        "cluster": cluster,
        "target": f"{deliver_to}:{namespace}",
        "endpoint": str(endpoint),
        "changed": changed,
    }


@task(name="deploy-app", **SECRET, **api_task_options())
def deploy_app_to(
    cluster: str, template_dir: str | None, skip_unready: bool, mgmt_context: str | None
) -> dict[str, str | bool] | None:
    """Copy the credentials into the workload cluster (if they are in mgmt) and apply the Job."""
    registry = connect(mgmt_context)
    workload = registry.client(cluster)
    from_mgmt = credentials.read_published(registry.mgmt, cluster)
    copied = False
    if from_mgmt is not None:
        copied = credentials.publish(workload, APP_NAMESPACE, *from_mgmt)
    published = credentials.read_published(workload, APP_NAMESPACE)
    if published is None:
        if skip_unready:
            return None
        raise PermanentError(f"cluster {cluster!r} has no credentials yet: run fetch-credentials first")
    job = app.render_job(*published, Path(template_dir) if template_dir else None)
    outcome = app.apply_job(workload, job)
    return {
        "cluster": cluster,
        "job": f"{job['metadata']['namespace']}/{job['metadata']['name']}",
        "job_outcome": outcome,
        "credentials_copied": copied,
    }


@task(name="withdraw-app", **api_task_options())
def withdraw_app_from(cluster: str, mgmt_context: str | None) -> str:
    """Withdraw the Job from a cluster no longer labelled type=app; says what happened."""
    registry = connect(mgmt_context)
    record = registry.get(cluster)
    if record is not None and record.labels.get("type") == "app":
        return "still labelled type=app: nothing to withdraw"
    if record is None:
        return "not registered: nothing to withdraw"
    if app.withdraw_job(registry.client(cluster)):
        return f"withdrew Job {APP_NAMESPACE}/{app.JOB_NAME}"
    return "no Job: nothing to withdraw"
