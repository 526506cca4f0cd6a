"""The whole chain, end to end, on the local fleet: what ``fleetflow demo`` and ``./scripts/demo`` run.

Every stage is a user action (a label, a webhook request) followed by a wait for its
consequence, measured. Nothing calls a flow directly: the platform's automations do the work.
With the real CloudNativePG on real nodes (the default), the demo waits for the Cluster's three
instances (a primary and two streaming replicas) and for the todo-table Job to succeed in its
pod, then proves the delivered credentials by finding the table the Job created. With the
stand-in (``--cnpg standin``: nodeless clusters, where no Job runs) the last stage runs the
Job's own SQL against the database instead, in a transaction that is rolled back.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fleetflow import config
from fleetflow.databases import crd, operator
from fleetflow.databases.names import APP_NAMESPACE, LABEL_NAMESPACE
from fleetflow.databases.views import CnpgCluster, DatabaseObject
from fleetflow.errors import FleetflowError
from fleetflow.kube import KubeClient
from fleetflow.labels import LabelEdit
from fleetflow.registry import Registry
from fleetflow.supervisor import PlatformState

WORKLOAD = "workload-cluster"


@dataclass
class Stage:
    name: str
    seconds: float
    result: str


class DemoError(FleetflowError):
    """A stage of the demo did not reach its expected outcome in time."""


def _until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)  # polling the clusters for the outcome, with a deadline
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")


def _secret(client: KubeClient, name: str, namespace: str) -> dict[str, str] | None:
    obj = client.get_or_none("v1", "Secret", name, namespace)
    return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()} if obj else None


def _webhook(state: PlatformState, cluster: str) -> dict[str, Any]:
    token = os.environ.get("FLEETFLOW_API_TOKEN") or (config.home() / "api-token").read_text().strip()
    request = urllib.request.Request(
        f"http://127.0.0.1:{state.webhook_port}/v1/databases",
        method="POST",
        data=json.dumps({"cluster": cluster}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return dict(json.loads(response.read()))


def _instances_ready(obj: dict[str, Any] | None) -> str | None:
    cnpg = CnpgCluster.of(obj) if obj else None
    if cnpg and cnpg.healthy and cnpg.instances and cnpg.ready_instances == cnpg.instances:
        return f"{cnpg.ready_instances}/{cnpg.instances} instances ready, primary {cnpg.current_primary}"
    return None


def _job_succeeded(job: dict[str, Any] | None) -> str | None:
    status = (job or {}).get("status") or {}
    if status.get("failed"):
        raise DemoError(f"the todo-table Job failed ({status.get('failed')} pod(s)); see its pods' logs")
    return "Succeeded" if status.get("succeeded") else None


def run(
    registry: Registry,
    state: PlatformState,
    progress: Callable[[str], None],
    timeout: float = 300.0,
    *,
    real: bool = False,
) -> list[Stage]:
    stages: list[Stage] = []
    mgmt = registry.mgmt

    def stage(name: str, action: Callable[[], str]) -> str:
        progress(f"{name} ...")
        started = time.monotonic()
        result = action()
        stages.append(Stage(name, time.monotonic() - started, result))
        progress(f"{name}: {result} ({stages[-1].seconds:.1f}s)")
        return result

    stage(
        "operator installed on service-cluster",
        lambda: _until(
            "install-operator to record cnpg on service-cluster",
            lambda: next(
                (
                    f"cnpg {a.version} in {a.namespace}"
                    for a in operator.addons(mgmt)
                    if a.cluster == "service-cluster"
                ),
                None,
            ),
            timeout,
        ),
    )
    stage(
        f"POST /v1/databases {WORKLOAD} (label postgres=required)",
        lambda: f"202, changed={_webhook(state, WORKLOAD)['changed']}",
    )
    service = registry.client("service-cluster")
    stage(
        "CNPG Cluster applied on service-cluster",
        lambda: _until(
            f"the CNPG Cluster of {WORKLOAD} on service-cluster",
            lambda: (
                f"{WORKLOAD}/cluster-{WORKLOAD}"
                if service.get_or_none("postgresql.cnpg.io/v1", "Cluster", f"cluster-{WORKLOAD}", WORKLOAD)
                else None
            ),
            timeout,
        ),
    )
    if real:
        stage(
            "CNPG replicas ready on service-cluster",
            lambda: _until(
                f"3/3 instances of cluster-{WORKLOAD}",
                lambda: _instances_ready(
                    service.get_or_none("postgresql.cnpg.io/v1", "Cluster", f"cluster-{WORKLOAD}", WORKLOAD)
                ),
                timeout,
            ),
        )
    stage(
        "database ready and credentials in mgmt",
        lambda: _until(
            f"pg-credentials in namespace {WORKLOAD} of mgmt",
            lambda: (
                "pg-credentials + pg-loadbalancer-data"
                if _secret(mgmt, "pg-credentials", WORKLOAD)
                and mgmt.get_or_none("v1", "ConfigMap", "pg-loadbalancer-data", WORKLOAD)
                else None
            ),
            timeout,
        ),
    )
    address = mgmt.get("v1", "ConfigMap", "pg-loadbalancer-data", WORKLOAD)["data"]
    workload = registry.client(WORKLOAD)

    def label_database() -> str | None:
        obj = workload.get_or_none(crd.API_VERSION, crd.KIND, WORKLOAD, LABEL_NAMESPACE)
        ready = DatabaseObject.of(obj).status.ready if obj else None
        return f"{LABEL_NAMESPACE}/{WORKLOAD} READY True" if ready and ready.status == "True" else None

    stage(
        f"Database of the label listed on {WORKLOAD} (kubectl get databases -A)",
        lambda: _until(f"Database {LABEL_NAMESPACE}/{WORKLOAD} Ready on {WORKLOAD}", label_database, timeout),
    )

    def job_args() -> list[str] | None:
        job = workload.get_or_none("batch/v1", "Job", "todo-table", APP_NAMESPACE)
        args = job["spec"]["template"]["spec"]["containers"][0]["args"] if job else []
        return list(args) if f"--port={address['port']}" in args else None

    stage(
        f"label {WORKLOAD} type=app",
        lambda: (
            f"labels {sorted(registry.edit_labels(WORKLOAD, LabelEdit.parse(['type=app'])).labels.items())}"
        ),
    )
    stage(
        "todo-table Job applied on workload-cluster",
        lambda: "todo/todo-table" if _until("the todo-table Job", job_args, timeout) else "",
    )
    if real:
        stage(
            "todo-table Job Succeeded on workload-cluster",
            lambda: _until(
                "the todo-table Job to succeed",
                lambda: _job_succeeded(workload.get_or_none("batch/v1", "Job", "todo-table", APP_NAMESPACE)),
                timeout,
            ),
        )
    creds = _secret(workload, "pg-credentials", APP_NAMESPACE) or {}
    options = dict(a.split("=", 1) for a in job_args() or [] if a.startswith("--") and "=" in a)

    def verify() -> str:
        sql = (
            "SELECT 'todo' || count(*) FROM pg_tables WHERE tablename = 'todo'"
            if real
            else f"BEGIN; {options['--command']} ROLLBACK;"
        )
        proc = subprocess.run(
            [
                "psql",
                f"--host={options['--host']}",
                f"--port={options['--port']}",
                f"--username={options['--username']}",
                f"--dbname={options['--dbname']}",
                "--no-password",
                "--set=ON_ERROR_STOP=1",
                f"--command={sql}",
                *(["-tA"] if real else []),
            ],
            env={"PATH": os.environ.get("PATH", ""), "PGPASSWORD": creds.get("password", "")},
            # -tA: the bare value, to check the table the Job created
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise DemoError(
                f"the delivered credentials did not run the Job's SQL: {proc.stderr.strip()[:200]}"
            )
        where = f"connected as {options['--username']} to {options['--host']}:{options['--port']}"
        if real:
            if proc.stdout.strip() != "todo1":
                raise DemoError(f"table todo is missing from {options['--dbname']} after the Job succeeded")
            return f"{where}, table todo present"
        return f"{where}, Job SQL ran"

    stage("delivered credentials verified against PostgreSQL", verify)
    return stages
