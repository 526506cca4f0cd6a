"""The CNPG Cluster for a requesting cluster, and waiting until it is really usable.

"Ready" means what a consumer needs, not what is quickest to report: the Cluster's phase is
"Cluster in healthy state" with condition Ready=True, its ``<name>-app`` secret exists, and its
LoadBalancer Service (``cnpg.io/isManaged=true``) has an ingress address. Each is awaited by a
watch with one shared deadline; a timeout names what was still missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetflow import templating
from fleetflow.dbaas.names import CNPG_API, HEALTHY, MANAGED, cnpg_cluster_name
from fleetflow.errors import ApplyConflictError, PermanentError
from fleetflow.kube import KubeClient


@dataclass(frozen=True)
class Database:
    """Where a requesting cluster's database lives; no credentials."""

    cluster: str  # the requesting cluster
    service_cluster: str
    namespace: str
    name: str

    @property
    def app_secret(self) -> str:
        return f"{self.name}-app"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def render_cluster(cluster: str, instances: int, template_dir: Path | None = None) -> dict[str, Any]:
    objects = templating.render(
        "cnpg-cluster.yaml.j2", {"cluster": cluster, "instances": instances}, template_dir
    )
    clusters = [o for o in objects if o.get("kind") == "Cluster"]
    if len(clusters) != 1:
        raise templating.TemplateError(
            f"cnpg-cluster.yaml.j2 must render exactly one Cluster, got {len(clusters)}"
        )
    return clusters[0]


def apply_cluster(service: KubeClient, body: dict[str, Any], service_cluster: str, cluster: str) -> Database:
    namespace = body["metadata"].get("namespace") or cluster
    body["metadata"]["namespace"] = namespace
    if service.get_or_none("v1", "Namespace", namespace) is None:
        service.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": MANAGED}}
        )
    live = service.get_or_none(body["apiVersion"], body["kind"], body["metadata"]["name"], namespace)
    if live is not None and contains(live, body):
        # Already as rendered. CloudNativePG's schema defaults fields the body leaves out, and the
        # API server then records even an identical apply as a managed-fields change (a new
        # resourceVersion): an unchanged database must cost no write.
        return Database(cluster, service_cluster, namespace, body["metadata"]["name"])
    try:
        service.apply(body)
    except ApplyConflictError:
        # Someone else changed a field fleetflow sets (a hand edit): fleetflow is the Cluster's
        # authority, so its value is put back. (Forcing every apply would rewrite the object's
        # managed fields, and so its resourceVersion, even when nothing changed.)
        service.apply(body, force=True)
    return Database(cluster, service_cluster, namespace, body["metadata"]["name"])


def contains(live: Any, wanted: Any) -> bool:
    """Whether ``live`` holds everything ``wanted`` says (extra fields, e.g. defaults, allowed)."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(k in live and contains(live[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(live) == len(wanted)
            and all(contains(a, b) for a, b in zip(live, wanted, strict=True))
        )
    return bool(live == wanted)


def database_of(cluster: str, service_cluster: str) -> Database:
    return Database(cluster, service_cluster, cluster, cnpg_cluster_name(cluster))


def healthy(obj: dict[str, Any] | None) -> bool:
    status = (obj or {}).get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return status.get("phase") == HEALTHY and ready


def _invalid(obj: dict[str, Any] | None) -> str | None:
    phase = ((obj or {}).get("status") or {}).get("phase", "")
    return (
        phase
        if phase in ("Invalid cluster definition", "Unable to create required cluster objects")
        else None
    )


def load_balancer(service: KubeClient, db: Database) -> tuple[dict[str, Any] | None, Endpoint | None]:
    items, _ = service.list(
        "v1", "Service", db.namespace, f"cnpg.io/cluster={db.name},cnpg.io/isManaged=true"
    )
    for svc in items:
        if (svc.get("spec") or {}).get("type") != "LoadBalancer":
            continue
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if ingress:
            host = ingress[0].get("ip") or ingress[0].get("hostname")
            return svc, Endpoint(str(host), int(svc["spec"]["ports"][0]["port"]))
        return svc, None
    return None, None


def wait_ready(service: KubeClient, db: Database, timeout: float) -> Endpoint:
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    def healthy_or_invalid(obj: dict[str, Any] | None) -> bool:
        return healthy(obj) or _invalid(obj) is not None

    live = service.wait(
        CNPG_API,
        "Cluster",
        db.name,
        db.namespace,
        healthy_or_invalid,
        timeout=left(),
        awaiting=f"Cluster {db.namespace}/{db.name} on {db.service_cluster} to be healthy and Ready",
    )
    if (reason := _invalid(live)) is not None:
        raise PermanentError(f"Cluster {db.namespace}/{db.name} on {db.service_cluster}: {reason}")
    service.wait(
        "v1",
        "Secret",
        db.app_secret,
        db.namespace,
        lambda o: o is not None,
        timeout=left(),
        awaiting=f"secret {db.namespace}/{db.app_secret} on {db.service_cluster}",
    )
    _, endpoint = load_balancer(service, db)
    if endpoint is None:
        svc, _ = load_balancer(service, db)
        name = svc["metadata"]["name"] if svc else "cluster-rw-lb"
        service.wait(
            "v1",
            "Service",
            name,
            db.namespace,
            lambda o: bool((((o or {}).get("status") or {}).get("loadBalancer") or {}).get("ingress")),
            timeout=left(),
            awaiting=f"LoadBalancer {db.namespace}/{name} on {db.service_cluster} to get an ingress address",
        )
        _, endpoint = load_balancer(service, db)
    if endpoint is None:
        raise PermanentError(
            f"Cluster {db.namespace}/{db.name} has no LoadBalancer service with cnpg.io/isManaged=true"
        )
    return endpoint


def phase(service: KubeClient, db: Database) -> str:
    obj = service.get_or_none(CNPG_API, "Cluster", db.name, db.namespace)
    if obj is None:
        return "Absent"
    return str(((obj.get("status") or {}).get("phase")) or "Pending")
