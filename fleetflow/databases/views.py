"""Typed views of the objects the database domain reads: a Database request, a CNPG Cluster and
its LoadBalancer Service. Each is parsed here, once, from the raw object the API returned, so
the rest of the domain reads fields instead of digging through dicts. The Secrets' views are in
:mod:`.secrets`; a FleetCluster's is :class:`fleetflow.registry.ClusterRecord`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetflow.databases import crd
from fleetflow.databases.names import CLUSTER_LABEL, HEALTHY, ORPHANED, REQUEST, REQUESTED_BY
from fleetflow.databases.spec import RequestRef, served_as

INVALID_PHASES = frozenset({"Invalid cluster definition", "Unable to create required cluster objects"})


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


@dataclass(frozen=True)
class Meta:
    name: str
    namespace: str
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    finalizers: tuple[str, ...] = ()
    deleting: bool = False  # metadata.deletionTimestamp is set

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Meta:
        meta = _dict(obj.get("metadata"))
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace") or ""),
            uid=str(meta.get("uid") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
            generation=int(meta.get("generation") or 0),
            labels={str(k): str(v) for k, v in _dict(meta.get("labels")).items()},
            annotations={str(k): str(v) for k, v in _dict(meta.get("annotations")).items()},
            finalizers=tuple(str(f) for f in _list(meta.get("finalizers"))),
            deleting=bool(meta.get("deletionTimestamp")),
        )


@dataclass(frozen=True)
class Ready:
    """The Ready condition: status ("True", "False" or "Unknown"), reason and message."""

    status: str = "Unknown"
    reason: str = ""
    message: str = ""


def ready_condition(status: Mapping[str, Any]) -> Ready:
    for c in _list(status.get("conditions")):
        if isinstance(c, Mapping) and c.get("type") == "Ready":
            return Ready(str(c.get("status", "Unknown")), str(c.get("reason", "")), str(c.get("message", "")))
    return Ready()


@dataclass(frozen=True)
class DatabaseStatus:
    phase: str = ""
    ready: Ready = Ready()
    observed_generation: int | None = None
    service_cluster: str = ""
    cnpg_cluster: str = ""
    database: str = ""
    secret_name: str = ""
    host: str = ""
    port: int = 0

    @classmethod
    def of(cls, status: Mapping[str, Any]) -> DatabaseStatus:
        endpoint = _dict(status.get("endpoint"))
        observed = status.get("observedGeneration")
        return cls(
            phase=str(status.get("phase") or ""),
            ready=ready_condition(status),
            observed_generation=int(observed) if isinstance(observed, int) else None,
            service_cluster=str(status.get("serviceCluster") or ""),
            cnpg_cluster=str(status.get("cnpgCluster") or ""),
            database=str(status.get("database") or ""),
            secret_name=str(status.get("secretName") or ""),
            host=str(endpoint.get("host") or ""),
            port=int(endpoint.get("port") or 0),
        )


@dataclass(frozen=True)
class DatabaseObject:
    """A Database request as read from its workload cluster. ``spec`` stays raw: it is judged
    by :meth:`fleetflow.databases.spec.DatabaseSpec.from_spec`, which names a bad field;
    ``raw_status`` is what a status write compares against."""

    meta: Meta
    spec: dict[str, Any]
    status: DatabaseStatus
    raw_status: dict[str, Any]

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> DatabaseObject:
        raw = _dict(obj.get("status"))
        return cls(Meta.of(obj), _dict(obj.get("spec")), DatabaseStatus.of(raw), raw)

    @property
    def finalized(self) -> bool:
        """Whether fleetflow's finalizer is on it."""
        return crd.FINALIZER in self.meta.finalizers

    @property
    def from_cluster_label(self) -> bool:
        """Whether this is the database a cluster's ``postgres=required`` label asks for."""
        return self.meta.labels.get(REQUESTED_BY) == CLUSTER_LABEL

    def served_as(self, cluster: str) -> RequestRef:
        """The request this object, seen on ``cluster``'s API server, is served as."""
        return served_as(cluster, self.meta.namespace, self.meta.name, self.from_cluster_label)

    @property
    def deletion_policy(self) -> str:
        return "Delete" if self.spec.get("deletionPolicy") == "Delete" else "Retain"

    @property
    def secret_name(self) -> str:
        return str(self.status.secret_name or self.spec.get("secretName") or f"{self.meta.name}-credentials")

    @property
    def converged(self) -> bool:
        """Whether fleetflow has seen this generation through (ready or failed for a stated reason)."""
        if self.meta.deleting:
            return False
        seen = self.status.observed_generation == self.meta.generation
        return seen and self.status.phase in ("Ready", "Failed")


@dataclass(frozen=True)
class CnpgCluster:
    """A CloudNativePG Cluster on a service cluster."""

    meta: Meta
    phase: str
    ready: bool  # condition Ready=True
    instances: int | None
    ready_instances: int
    initdb_database: str  # the database CloudNativePG created (fixed once created)
    current_primary: str = ""  # the instance serving -rw

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> CnpgCluster:
        status, spec = _dict(obj.get("status")), _dict(obj.get("spec"))
        initdb = _dict(_dict(spec.get("bootstrap")).get("initdb"))
        instances = status.get("instances", spec.get("instances"))
        return cls(
            meta=Meta.of(obj),
            phase=str(status.get("phase") or ""),
            ready=ready_condition(status).status == "True",
            instances=int(instances) if isinstance(instances, int) else None,
            ready_instances=int(status.get("readyInstances") or 0),
            initdb_database=str(initdb.get("database") or ""),
            current_primary=str(status.get("currentPrimary") or ""),
        )

    @property
    def healthy(self) -> bool:
        """What a consumer needs: phase "Cluster in healthy state" and condition Ready=True."""
        return self.phase == HEALTHY and self.ready

    @property
    def invalid(self) -> str | None:
        """The phase, when it says the Cluster can never become ready as written."""
        return self.phase if self.phase in INVALID_PHASES else None

    @property
    def orphaned(self) -> bool:
        return ORPHANED in self.meta.annotations

    @property
    def request(self) -> str:
        """The Database request (CLUSTER/NAMESPACE/NAME) it was made for, or ""."""
        return self.meta.annotations.get(REQUEST, "")

    def summary(self) -> str:
        """Its readiness in a few words (no secret): what a status message and a log say."""
        if self.healthy:
            return "ready"
        shown = self.instances if self.instances is not None else "?"
        return f"not ready ({self.phase or 'no status yet'}, {self.ready_instances}/{shown} ready)"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class LoadBalancer:
    """A Cluster's LoadBalancer Service: its name and, once it has one, its ingress address."""

    name: str
    endpoint: Endpoint | None

    @classmethod
    def of(cls, svc: Mapping[str, Any]) -> LoadBalancer | None:
        """The view, or None when the Service is not of type LoadBalancer."""
        spec = _dict(svc.get("spec"))
        if spec.get("type") != "LoadBalancer":
            return None
        ingress = _list(_dict(_dict(svc.get("status")).get("loadBalancer")).get("ingress"))
        ports = _list(spec.get("ports"))
        name = Meta.of(svc).name
        if not ingress or not ports:
            return cls(name, None)
        first = _dict(ingress[0])
        host = first.get("ip") or first.get("hostname")
        return cls(name, Endpoint(str(host), int(_dict(ports[0]).get("port") or 0)))
