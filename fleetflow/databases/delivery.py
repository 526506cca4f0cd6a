"""The label path's delivery: the seed's ``pg-credentials`` and ``pg-loadbalancer-data``.

For the database a cluster's ``postgres=required`` label asks for, converge (the same one every
request gets) also writes the seed's Secret ``pg-credentials`` (keys ``user``, ``password``)
and ConfigMap ``pg-loadbalancer-data`` (keys ``external-ip``, ``port``, ``dbname``): into the
management cluster's namespace for the cluster (``mgmt``, as in the seed) or into namespace
``todo`` of the workload cluster itself (``workload``, keeping credentials out of mgmt). The
choice is recorded on the FleetCluster; a copy delivered earlier to the other place is rewritten
too when stale, so after a rotation both hold the new password. The copied Secret carries its
source's uid and resourceVersion in an annotation: an unchanged source writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fleetflow import templating
from fleetflow.databases.names import (
    APP_NAMESPACE,
    CREDENTIALS_SECRET,
    DELIVERY_ANNOTATION,
    LOADBALANCER_CONFIGMAP,
    MANAGED,
    SOURCE_ANNOTATION,
)
from fleetflow.databases.secrets import Credentials, Delivered, address_of, delivered_credentials, same_secret
from fleetflow.databases.views import Endpoint
from fleetflow.errors import FleetflowError
from fleetflow.kube import KubeClient
from fleetflow.registry import ClusterRecord, Registry

log = logging.getLogger("fleetflow.databases.delivery")

Target = Literal["mgmt", "workload"]


@dataclass(frozen=True)
class Published:
    target: str  # "mgmt:<namespace>" or "workload:todo"
    changed: bool


def target_of(record: ClusterRecord | None, asked: str | None) -> Target:
    """Where the credentials go: as asked, else where they went last time, else mgmt."""
    chosen = asked or (record.annotations.get(DELIVERY_ANNOTATION) if record else None)
    return "workload" if chosen == "workload" else "mgmt"


def _place(registry: Registry, cluster: str, target: Target) -> tuple[KubeClient, str]:
    return (registry.client(cluster), APP_NAMESPACE) if target == "workload" else (registry.mgmt, cluster)


def deliver(
    registry: Registry,
    record: ClusterRecord,
    creds: Credentials,
    endpoint: Endpoint,
    asked: str | None = None,
) -> Published:
    """Write the seed's pair where ``asked`` (or the recorded choice) says, refresh a stale copy
    elsewhere, and record the choice. A copy elsewhere that cannot be reached is left to the
    next converge: the delivery asked for is what counts."""
    target = target_of(record, asked)
    client, namespace = _place(registry, record.name, target)
    changed = publish(client, namespace, creds, endpoint)
    other: Target = "mgmt" if target == "workload" else "workload"
    try:
        changed = refresh(*_place(registry, record.name, other), creds, endpoint) or changed
    except FleetflowError as exc:  # repaired by the next converge (reconcile, or a rotation's)
        log.warning("a stale copy of %s's credentials was not rewritten: %s", record.name, exc)
    if record.annotations.get(DELIVERY_ANNOTATION) != target:
        registry.annotate(record.name, {DELIVERY_ANNOTATION: target})
    return Published(f"{target}:{namespace}", changed)


def delivered_source(target: KubeClient, namespace: str) -> str | None:
    copy = Delivered.of(target.get_or_none("v1", "Secret", CREDENTIALS_SECRET, namespace))
    return copy.source if copy is not None and copy.source else None


def publish(
    target: KubeClient,
    namespace: str,
    creds: Credentials,
    endpoint: Endpoint,
    template_dir: Path | None = None,
) -> bool:
    """Write pg-credentials and pg-loadbalancer-data into ``namespace``; False if already current."""
    address = address_of(target.get_or_none("v1", "ConfigMap", LOADBALANCER_CONFIGMAP, namespace))
    wanted = {"external-ip": endpoint.host, "port": str(endpoint.port)}
    if creds.dbname:
        wanted["dbname"] = creds.dbname
    if address == wanted and delivered_source(target, namespace) == creds.source:
        return False
    if target.get_or_none("v1", "Namespace", namespace) is None:
        target.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": MANAGED}}
        )
    labels = dict(MANAGED)
    objects: list[dict[str, Any]] = [
        *templating.render(
            "pg-credentials.yaml.j2",
            {"namespace": namespace, "user": creds.user, "password": creds.password, "labels": labels},
            template_dir,
        ),
        *templating.render(
            "pg-loadbalancer-data.yaml.j2",
            {
                "namespace": namespace,
                "external_ip": endpoint.host,
                "port": endpoint.port,
                "dbname": creds.dbname,
                "labels": labels,
            },
            template_dir,
        ),
    ]
    for obj in objects:
        if obj["kind"] == "Secret":
            obj["metadata"].setdefault("annotations", {})[SOURCE_ANNOTATION] = creds.source
        target.apply(obj)
    return True


def refresh(target: KubeClient, namespace: str, creds: Credentials, endpoint: Endpoint) -> bool:
    """Rewrite a copy delivered earlier into ``namespace`` from the same Secret when it is stale
    (a rotated password); False when there is no such copy or it is current."""
    source = delivered_source(target, namespace)
    if not source or not same_secret(source, creds.source):
        return False
    return publish(target, namespace, creds, endpoint)


def withdraw(target: KubeClient, namespace: str) -> bool:
    gone = target.delete("v1", "Secret", CREDENTIALS_SECRET, namespace)
    return target.delete("v1", "ConfigMap", LOADBALANCER_CONFIGMAP, namespace) or gone


def withdraw_everywhere(registry: Registry, cluster: str) -> list[str]:
    """Remove the pair from the management and the workload cluster; says where it was."""
    gone = [("the management cluster", withdraw(registry.mgmt, cluster))]
    gone.append((cluster, withdraw(registry.client(cluster), APP_NAMESPACE)))
    return [where for where, found in gone if found]


def read_published(target: KubeClient, namespace: str) -> tuple[Credentials, Endpoint] | None:
    """The credentials a previous delivery wrote into ``namespace``, if any."""
    secret = target.get_or_none("v1", "Secret", CREDENTIALS_SECRET, namespace)
    config = target.get_or_none("v1", "ConfigMap", LOADBALANCER_CONFIGMAP, namespace)
    if not secret or not config:
        return None
    return delivered_credentials(secret, config)
