"""The status a Database shows: phase, the Ready condition with reason and message, the endpoint.

Written with server-side apply on the status subresource at every step, so ``kubectl get
databases`` follows the request as it goes (and says why it stopped).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from fleetflow.databases import crd
from fleetflow.databases.spec import RequestRef
from fleetflow.databases.views import DatabaseObject
from fleetflow.kube import KubeClient

# Phases, and the Ready condition's reasons when it is False.
PROVISIONING = "Provisioning"
READY = "Ready"
FAILED = "Failed"
DELETING = "Deleting"
UNAVAILABLE = "Unavailable"  # provisioned, but its CNPG Cluster is not ready now (an instance is down)
REASONS = (
    "InvalidSpec",
    "NoServiceCluster",
    "NoOperator",
    "ImmutableField",
    "Timeout",
    "Unreachable",
    "Provisioning",
    "Deleting",
    UNAVAILABLE,
)


@dataclass(frozen=True)
class Outcome:
    """What a converge did, in words; never a secret."""

    request: str
    phase: str  # Ready, Failed, Deleted, Absent, Alias (served under another name)
    detail: str
    service_cluster: str = ""
    cnpg_cluster: str = ""  # NAMESPACE/NAME on the service cluster
    endpoint: str = ""  # host:port, once Ready
    delivered_to: str = ""  # the label path's pg-credentials: "mgmt:<namespace>" or "workload:todo"
    published: str = ""  # the source (Secret uid/resourceVersion) of the copy this run wrote, if any


@dataclass(frozen=True)
class Report:
    phase: str
    ready: bool
    reason: str
    message: str
    service_cluster: str = ""
    cnpg_cluster: str = ""
    database: str = ""
    secret_name: str = ""
    host: str = ""
    port: int = 0


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def body(ref: RequestRef, report: Report, generation: int, previous: dict[str, Any] | None) -> dict[str, Any]:
    """The status apply body; the condition's lastTransitionTime moves only when its status does."""
    wanted = "True" if report.ready else "False"
    conditions: list[dict[str, Any]] = (previous or {}).get("conditions") or []
    old: dict[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
    since = old.get("lastTransitionTime") if old.get("status") == wanted else None
    status: dict[str, Any] = {
        "phase": report.phase,
        "observedGeneration": generation,
        "conditions": [
            {
                "type": "Ready",
                "status": wanted,
                "reason": report.reason,
                "message": report.message[:1024],
                "lastTransitionTime": since or _now(),
                "observedGeneration": generation,
            }
        ],
    }
    for key, value in (
        ("serviceCluster", report.service_cluster),
        ("cnpgCluster", report.cnpg_cluster),
        ("database", report.database),
        ("secretName", report.secret_name),
    ):
        if value:
            status[key] = value
    if report.host:
        status["endpoint"] = {"host": report.host, "port": report.port}
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": ref.name, "namespace": ref.namespace},
        "status": status,
    }


def write(client: KubeClient, ref: RequestRef, db: DatabaseObject, report: Report) -> bool:
    """Apply ``report`` as the status of ``db`` (the live Database); no write (False) when the
    status already says exactly this, so a converged request is left alone."""
    wanted = body(ref, report, db.meta.generation, db.raw_status)
    if _comparable(wanted["status"]) == _comparable(db.raw_status):
        return False
    client.apply_status(wanted, force=True)
    return True


def _comparable(status: dict[str, Any]) -> dict[str, Any]:
    conditions = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.get("conditions") or []
    ]
    return {**status, "conditions": conditions}


def ready_of(obj: dict[str, Any]) -> tuple[str, str, str]:
    """(status, reason, message) of a Database's Ready condition, or ("Unknown", "", "")."""
    ready = DatabaseObject.of(obj).status.ready
    return ready.status, ready.reason, ready.message


def converged(obj: dict[str, Any]) -> bool:
    """Whether fleetflow has seen this generation of a Database through (ready or failed for a
    stated reason)."""
    return DatabaseObject.of(obj).converged
