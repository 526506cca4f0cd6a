"""The seed's application: the todo-table Job, on workload clusters labelled ``type=app``.

The Job reads its password from the Secret ``pg-credentials`` in its own namespace through
``secretKeyRef``; the password is never written into the Job. A Job's pod template is
immutable, so a Job whose rendered spec changed (new address after a move) is replaced. A
cluster that is no longer labelled ``type=app`` has its Job withdrawn (:func:`withdraw_job`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleetflow import config, templating
from fleetflow.databases.names import APP_NAMESPACE, MANAGED
from fleetflow.databases.secrets import Credentials
from fleetflow.databases.views import Endpoint, Meta
from fleetflow.errors import APIInvalidError
from fleetflow.kube import KubeClient


def render_job(creds: Credentials, endpoint: Endpoint, template_dir: Path | None = None) -> dict[str, Any]:
    # Nodes without a registry (the local fleet's) record an image they hold.
    image = config.setting(config.APP_IMAGE)
    [job] = [
        o
        for o in templating.render(
            "todo-table-job.yaml.j2",
            {
                "host": endpoint.host,
                "port": endpoint.port,
                "user": creds.user,
                **({"database": creds.dbname} if creds.dbname else {}),
                "labels": dict(MANAGED),
                **({"image": image} if image else {}),
            },
            template_dir,
        )
        if o["kind"] == "Job"
    ]
    return job


def apply_job(workload: KubeClient, job: dict[str, Any]) -> str:
    """Apply the Job; returns "created", "unchanged" or "replaced"."""
    meta = Meta.of(job)
    namespace, name = meta.namespace or APP_NAMESPACE, meta.name
    existing = workload.get_or_none("batch/v1", "Job", name, namespace)
    try:
        workload.apply(job)
    except APIInvalidError as exc:
        if "immutable" not in str(exc):
            raise
        workload.delete("batch/v1", "Job", name, namespace)
        workload.wait(
            "batch/v1",
            "Job",
            name,
            namespace,
            lambda o: o is None,
            timeout=60,
            awaiting=f"old Job {namespace}/{name} to be deleted",
        )
        workload.apply(job)
        return "replaced"
    return "unchanged" if existing else "created"


JOB_NAME = "todo-table"


def withdraw_job(workload: KubeClient) -> bool:
    """Delete the todo-table Job (its Pods with it, in the background); False if there was none.
    Only Jobs fleetflow deployed (label ``app.kubernetes.io/managed-by: fleetflow``) are touched."""
    job = workload.get_or_none("batch/v1", "Job", JOB_NAME, APP_NAMESPACE)
    if job is None or Meta.of(job).labels.get("app.kubernetes.io/managed-by") != "fleetflow":
        return False
    return bool(workload.delete("batch/v1", "Job", JOB_NAME, APP_NAMESPACE))
