"""Tasks of deploy-app and withdraw-app: the seed's todo-table Job on clusters labelled type=app.

deploy-app reads the delivered ``pg-credentials`` and writes a copy in one task run, so the
password never travels as a task result or parameter; only the outcome is returned.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from fleetflow.databases import app, delivery
from fleetflow.databases.names import APP_NAMESPACE
from fleetflow.errors import PermanentError
from fleetflow.registry import connect
from fleetflow.tasks.policy import SECRET, api_task_options


@task(name="deploy-app", **SECRET, **api_task_options())
def deploy_app_to(
    cluster: str, template_dir: str | None, skip_unready: bool, mgmt_context: str | None
) -> dict[str, str | bool] | None:
    """Copy the credentials into the workload cluster (if they are in mgmt) and apply the Job."""
    registry = connect(mgmt_context)
    workload = registry.client(cluster)
    from_mgmt = delivery.read_published(registry.mgmt, cluster)
    copied = False
    if from_mgmt is not None:
        copied = delivery.publish(workload, APP_NAMESPACE, *from_mgmt)
    published = delivery.read_published(workload, APP_NAMESPACE)
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
