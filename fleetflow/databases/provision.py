"""A request's CloudNativePG Cluster on its service cluster: render, apply, and wait until usable.

"Usable" means what a consumer needs, not what is quickest to report: the Cluster's phase is
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
from fleetflow.databases import spec
from fleetflow.databases.names import CNPG_API, MANAGED, REQUEST
from fleetflow.databases.spec import DatabaseSpec, RequestRef
from fleetflow.databases.views import CnpgCluster, Endpoint, LoadBalancer
from fleetflow.errors import ApplyConflictError, PermanentError
from fleetflow.kube import KubeClient


@dataclass(frozen=True)
class Placed:
    """Where a request's CNPG Cluster lives: service cluster, namespace (the requesting
    cluster's name) and name. No credentials."""

    service_cluster: str
    namespace: str
    name: str
    service: str  # its LoadBalancer Service

    @classmethod
    def of(cls, ref: RequestRef, service_cluster: str) -> Placed:
        return cls(service_cluster, ref.cluster, spec.cnpg_name(ref), spec.service_name(ref))

    @property
    def app_secret(self) -> str:
        return f"{self.name}-app"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def render(ref: RequestRef, wanted: DatabaseSpec, template_dir: Path | None = None) -> dict[str, Any]:
    """The CNPG Cluster for ``ref`` from ``cnpg-cluster.yaml.j2``, annotated with the request."""
    name = spec.cnpg_name(ref)
    objects = templating.render(
        "cnpg-cluster.yaml.j2",
        {
            "cluster": ref.cluster,
            "name": name,
            "instances": wanted.instances,
            "database": wanted.database,
            "owner": wanted.owner if wanted.owner != wanted.database else "",
            "storage_size": wanted.storage,
            "service_name": spec.service_name(ref),
        },
        template_dir,
    )
    clusters = [o for o in objects if o.get("kind") == "Cluster"]
    if len(clusters) != 1:
        raise templating.TemplateError(
            f"cnpg-cluster.yaml.j2 must render exactly one Cluster, got {len(clusters)}"
        )
    body = clusters[0]
    body["metadata"]["namespace"] = ref.cluster
    body["metadata"].setdefault("annotations", {})[REQUEST] = str(ref)
    return body


def get(service: KubeClient, placed: Placed) -> CnpgCluster | None:
    live = service.get_or_none(CNPG_API, "Cluster", placed.name, placed.namespace)
    return CnpgCluster.of(live) if live is not None else None


def apply(service: KubeClient, body: dict[str, Any]) -> None:
    """Server-side apply the Cluster (and its namespace); no write when it already holds the body."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    if service.get_or_none("v1", "Namespace", namespace) is None:
        service.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": MANAGED}}
        )
    live = service.get_or_none(body["apiVersion"], body["kind"], name, namespace)
    if live is not None and contains(live, body):
        # Already as rendered. CloudNativePG's schema defaults fields the body leaves out, and the
        # API server then records even an identical apply as a managed-fields change (a new
        # resourceVersion): an unchanged database must cost no write.
        return
    try:
        service.apply(body)
    except ApplyConflictError:
        # Someone else changed a field fleetflow sets (a hand edit): fleetflow is the Cluster's
        # authority, so its value is put back. (Forcing every apply would rewrite the object's
        # managed fields, and so its resourceVersion, even when nothing changed.)
        service.apply(body, force=True)


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


def load_balancer(service: KubeClient, placed: Placed) -> LoadBalancer | None:
    items, _ = service.list(
        "v1", "Service", placed.namespace, f"cnpg.io/cluster={placed.name},cnpg.io/isManaged=true"
    )
    return next((lb for svc in items if (lb := LoadBalancer.of(svc)) is not None), None)


def wait_ready(service: KubeClient, placed: Placed, timeout: float) -> Endpoint:
    deadline = time.monotonic() + timeout
    where = f"{placed} on {placed.service_cluster}"

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    def healthy_or_invalid(obj: dict[str, Any] | None) -> bool:
        return obj is not None and (CnpgCluster.of(obj).healthy or CnpgCluster.of(obj).invalid is not None)

    live = service.wait(
        CNPG_API,
        "Cluster",
        placed.name,
        placed.namespace,
        healthy_or_invalid,
        timeout=left(),
        awaiting=f"Cluster {where} to be healthy and Ready",
    )
    if live is not None and (reason := CnpgCluster.of(live).invalid) is not None:
        raise PermanentError(f"Cluster {where}: {reason}")
    service.wait(
        "v1",
        "Secret",
        placed.app_secret,
        placed.namespace,
        lambda o: o is not None,
        timeout=left(),
        awaiting=f"secret {placed.namespace}/{placed.app_secret} on {placed.service_cluster}",
    )
    lb = load_balancer(service, placed)
    if lb is not None and lb.endpoint is not None:
        return lb.endpoint
    name = lb.name if lb else placed.service
    service.wait(
        "v1",
        "Service",
        name,
        placed.namespace,
        lambda o: o is not None and (found := LoadBalancer.of(o)) is not None and found.endpoint is not None,
        timeout=left(),
        awaiting=f"LoadBalancer {placed.namespace}/{name} on {placed.service_cluster} to get an address",
    )
    lb = load_balancer(service, placed)
    if lb is None or lb.endpoint is None:
        raise PermanentError(f"Cluster {where} has no LoadBalancer service with cnpg.io/isManaged=true")
    return lb.endpoint
