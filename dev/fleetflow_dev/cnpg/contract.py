"""CloudNativePG's contract for a Cluster, as plain objects: what the operator reads and writes.

Pure functions, no API calls: :func:`parse` reads the parts of a ``postgresql.cnpg.io/v1``
Cluster the stand-in honours; the builders return the Secret, Services and status CloudNativePG
1.30 would write (its ``pkg/specs/secrets.go`` and ``pkg/specs/services.go``), with one
deliberate differences: ports are the real local PostgreSQL server's port, not 5432, so that a
LoadBalancer Service's ingress IP (127.0.0.1) plus its port reaches the server; and the user and
database are :func:`sql_name` of the Cluster, since the Clusters of a service cluster share one
server (see the controller's docstring).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from fleetflow.errors import UsageError
from fleetflow.supervisor.pgroles import validate_name

GROUP = "postgresql.cnpg.io"
API_VERSION = f"{GROUP}/v1"
KIND = "Cluster"
CRD_NAME = f"clusters.{GROUP}"
FINALIZER = "fleetflow.io/cnpg-standin"

MANAGER = "cloudnative-pg"  # app.kubernetes.io/managed-by on what the operator creates
CLUSTER_LABEL = "cnpg.io/cluster"
IS_MANAGED_LABEL = "cnpg.io/isManaged"
RELOAD_LABEL = "cnpg.io/reload"
USER_TYPE_LABEL = "cnpg.io/userType"
UPDATE_STRATEGY_ANNOTATION = "cnpg.io/updateStrategy"

PHASE_HEALTHY = "Cluster in healthy state"
PHASE_SETTING_UP = "Setting up primary"
PHASE_WAITING = "Waiting for the instances to become active"  # an instance is down
PHASE_UNABLE = "Unable to create required cluster objects"
PHASE_INVALID = "Invalid cluster definition"

LOAD_BALANCER_IP = "127.0.0.1"
CLUSTER_DOMAIN = "cluster.local"
DEFAULT_DATABASE = "app"
SELECTOR_TYPES = ("rw", "ro", "r")
_DISABLEABLE = ("ro", "r")  # CloudNativePG never lets the -rw service be disabled


@dataclass(frozen=True)
class AdditionalService:
    """One ``spec.managed.services.additional[]`` entry."""

    name: str
    selector_type: str
    update_strategy: str
    template: dict[str, Any]


@dataclass(frozen=True)
class ClusterSpec:
    """The parts of a Cluster the stand-in honours."""

    namespace: str
    name: str
    uid: str
    instances: int
    database: str
    owner: str
    user_secret: str | None  # spec.bootstrap.initdb.secret.name: credentials the user provides
    default_services: tuple[str, ...]  # selector types of the -rw/-ro/-r services to keep
    additional: tuple[AdditionalService, ...]

    @property
    def rw_service(self) -> str:
        return service_name(self.name, "rw")

    @property
    def app_secret_name(self) -> str:
        return f"{self.name}-app"

    @property
    def sql_name(self) -> str:
        """The role and database that stand in for this Cluster's owner and database."""
        return sql_name(self.namespace, self.name)


def sql_name(namespace: str, name: str) -> str:
    """The role and database name of Cluster ``namespace/name`` on its service cluster's server.

    Deterministic, unique per (namespace, name) (a hash of both is always part of it, so
    ``a-b/c`` and ``a/b-c`` differ), a plain lower-case SQL identifier of at most 61 bytes
    (PostgreSQL allows 63), starting with ``c_`` (never ``pg_`` nor ``postgres``).
    """
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:12]
    readable = re.sub(r"[^a-z0-9]+", "_", f"{namespace}_{name}".lower()).strip("_")
    return f"c_{readable[:46].rstrip('_')}_{digest}"


def service_name(cluster: str, selector_type: str) -> str:
    return f"{cluster}-{selector_type}"


def _invalid(cluster: str, problem: str) -> UsageError:
    return UsageError(f"Cluster {cluster}: {problem}")


def _mapping(value: Any, where: str, cluster: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(cluster, f"{where} must be an object")
    return value


def requested_instances(obj: dict[str, Any]) -> int:
    """``spec.instances`` when it is a positive integer, else 0 (for the status of a bad definition)."""
    value = (obj.get("spec") or {}).get("instances", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse(obj: dict[str, Any]) -> ClusterSpec:
    """What ``obj`` asks for; UsageError ("Invalid cluster definition") if the stand-in cannot honour it."""
    meta = obj["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    spec = _mapping(obj.get("spec"), "spec", name)
    instances = requested_instances(obj)
    if not instances:
        raise _invalid(name, f"spec.instances must be a positive integer, not {spec.get('instances')!r}")
    bootstrap = _mapping(spec.get("bootstrap"), "spec.bootstrap", name)
    others = sorted(set(bootstrap) - {"initdb"})
    if others:
        raise _invalid(name, f"the local stand-in bootstraps with initdb only, not {', '.join(others)}")
    initdb = _mapping(bootstrap.get("initdb"), "spec.bootstrap.initdb", name)
    database = str(initdb.get("database") or DEFAULT_DATABASE)
    owner = str(initdb.get("owner") or database)  # CloudNativePG: the owner defaults to the database name
    try:
        validate_name("database", database)
        validate_name("role", owner)
    except UsageError as exc:
        raise _invalid(name, str(exc)) from None
    secret_ref = _mapping(initdb.get("secret"), "spec.bootstrap.initdb.secret", name)
    user_secret = str(secret_ref["name"]) if secret_ref.get("name") else None

    managed = _mapping(spec.get("managed"), "spec.managed", name)
    services = _mapping(managed.get("services"), "spec.managed.services", name)
    disabled = services.get("disabledDefaultServices") or []
    if not isinstance(disabled, list) or any(d not in _DISABLEABLE for d in disabled):
        raise _invalid(
            name, f"spec.managed.services.disabledDefaultServices may hold only {list(_DISABLEABLE)}"
        )
    defaults = tuple(t for t in SELECTOR_TYPES if t not in disabled)
    reserved = {service_name(name, t) for t in SELECTOR_TYPES}
    additional: list[AdditionalService] = []
    for index, raw in enumerate(services.get("additional") or []):
        where = f"spec.managed.services.additional[{index}]"
        entry = _mapping(raw, where, name)
        selector_type = entry.get("selectorType")
        if selector_type not in SELECTOR_TYPES:
            raise _invalid(name, f"{where}.selectorType must be one of {list(SELECTOR_TYPES)}")
        template = _mapping(entry.get("serviceTemplate"), f"{where}.serviceTemplate", name)
        service = _mapping(template.get("metadata"), f"{where}.serviceTemplate.metadata", name).get("name")
        if not service or not isinstance(service, str):
            raise _invalid(name, f"{where}.serviceTemplate.metadata.name is required")
        if service in reserved or service in {a.name for a in additional}:
            raise _invalid(name, f"{where}: the service name {service} is already taken")
        strategy = str(entry.get("updateStrategy") or "patch")
        additional.append(AdditionalService(service, str(selector_type), strategy, template))
    return ClusterSpec(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid", "")),
        instances=instances,
        database=database,
        owner=owner,
        user_secret=user_secret,
        default_services=defaults,
        additional=tuple(additional),
    )


# -- what the operator writes ----------------------------------------------------------------


def owner_reference(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def secret_values(spec: ClusterSpec, user: str, dbname: str, password: str, port: int) -> dict[str, str]:
    """The keys of CloudNativePG's ``<cluster>-app`` Secret, with the local server's port."""
    host = spec.rw_service
    namespaced = f"{host}.{spec.namespace}:{port}"
    fqdn = f"{host}.{spec.namespace}.svc.{CLUSTER_DOMAIN}:{port}"
    userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
    query = urlencode({"password": password, "user": user})  # Go's url.Values.Encode sorts keys
    path = quote(dbname)

    def uri(where: str) -> str:
        return f"postgresql://{userinfo}@{where}/{path}"

    def jdbc(where: str) -> str:
        return f"jdbc:postgresql://{where}/{path}?{query}"

    return {
        "username": user,
        "user": user,
        "password": password,
        "dbname": dbname,
        "host": host,
        "port": str(port),
        "pgpass": f"{host}:{port}:{dbname}:{user}:{password}\n",
        "uri": uri(namespaced),
        "jdbc-uri": jdbc(namespaced),
        "fqdn-uri": uri(fqdn),
        "fqdn-jdbc-uri": jdbc(fqdn),
    }


def app_secret(obj: dict[str, Any], spec: ClusterSpec, password: str, port: int) -> dict[str, Any]:
    """Secret ``<cluster>-app`` (kubernetes.io/basic-auth), owned by the Cluster: its role and database."""
    values = secret_values(spec, spec.sql_name, spec.sql_name, password, port)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": spec.app_secret_name,
            "namespace": spec.namespace,
            "labels": {
                RELOAD_LABEL: "true",
                CLUSTER_LABEL: spec.name,
                USER_TYPE_LABEL: "app",
                "app.kubernetes.io/managed-by": MANAGER,
            },
            "ownerReferences": [owner_reference(obj)],
        },
        "type": "kubernetes.io/basic-auth",
        "data": {key: _b64(value) for key, value in values.items()},
    }


def _selector(cluster: str, selector_type: str) -> dict[str, str]:
    if selector_type == "rw":
        return {CLUSTER_LABEL: cluster, "cnpg.io/instanceRole": "primary"}
    if selector_type == "ro":
        return {CLUSTER_LABEL: cluster, "cnpg.io/instanceRole": "replica"}
    return {CLUSTER_LABEL: cluster, "cnpg.io/podRole": "instance"}


def _labels(cluster: str) -> dict[str, str]:
    return {
        CLUSTER_LABEL: cluster,
        "app.kubernetes.io/name": "postgresql",
        "app.kubernetes.io/instance": cluster,
        "app.kubernetes.io/component": "database",
        "app.kubernetes.io/managed-by": MANAGER,
    }


def _ports(port: int) -> list[dict[str, Any]]:
    return [{"name": "postgres", "protocol": "TCP", "port": port, "targetPort": "postgres"}]


def default_service(obj: dict[str, Any], spec: ClusterSpec, selector_type: str, port: int) -> dict[str, Any]:
    """Service ``<cluster>-rw``, ``-ro`` or ``-r`` (ClusterIP)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(spec.name, selector_type),
            "namespace": spec.namespace,
            "labels": _labels(spec.name),
            "ownerReferences": [owner_reference(obj)],
        },
        "spec": {"type": "ClusterIP", "ports": _ports(port), "selector": _selector(spec.name, selector_type)},
    }


def additional_service(
    obj: dict[str, Any], spec: ClusterSpec, entry: AdditionalService, port: int
) -> dict[str, Any]:
    """A ``managed.services.additional[]`` Service: its template plus what CloudNativePG sets on it.

    The selector, the labels and the ``postgres`` port are the operator's; the port number is
    the local server's whatever the template says, so that the Service leads to the server.
    """
    template_meta = entry.template.get("metadata") or {}
    template_spec = dict(entry.template.get("spec") or {})
    template_spec.pop("ports", None)
    labels = {**(template_meta.get("labels") or {}), IS_MANAGED_LABEL: "true", **_labels(spec.name)}
    annotations = {
        **(template_meta.get("annotations") or {}),
        UPDATE_STRATEGY_ANNOTATION: entry.update_strategy,
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": entry.name,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(obj)],
        },
        "spec": {
            **template_spec,
            "type": template_spec.get("type") or "ClusterIP",
            "selector": _selector(spec.name, entry.selector_type),
            "ports": _ports(port),
        },
    }


def load_balancer_status(service: dict[str, Any]) -> dict[str, Any]:
    """The status a cloud's load-balancer controller would write: reachable at 127.0.0.1."""
    meta = service["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "status": {"loadBalancer": {"ingress": [{"ip": LOAD_BALANCER_IP}]}},
    }


def cluster_status(
    name: str,
    instances: int,
    phase: str,
    *,
    previous: dict[str, Any] | None,
    now: str,
    reason: str = "",
) -> dict[str, Any]:
    """The Cluster's status in ``phase``; the Ready condition keeps its lastTransitionTime while unchanged."""
    ready = phase == PHASE_HEALTHY
    condition = {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "ClusterIsReady" if ready else "ClusterIsNotReady",
        "message": "Cluster is Ready" if ready else "Cluster Is Not Ready",
        "lastTransitionTime": now,
    }
    for old in (previous or {}).get("conditions") or []:
        if old.get("type") == "Ready" and old.get("status") == condition["status"]:
            condition["lastTransitionTime"] = old.get("lastTransitionTime") or now
    return {
        "phase": phase,
        "phaseReason": reason,
        "instances": instances,
        "readyInstances": instances if ready else 0,
        "writeService": service_name(name, "rw"),
        "readService": service_name(name, "r"),
        "conditions": [condition],
    }


def status_is(live: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """Whether the live status already says what ``desired`` says (writing it would change nothing)."""
    live = live or {}
    return all(live.get(key) == value for key, value in desired.items())


def is_ready(obj: dict[str, Any] | None) -> bool:
    """CloudNativePG's readiness: phase healthy and condition Ready=True."""
    status = (obj or {}).get("status") or {}
    return status.get("phase") == PHASE_HEALTHY and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def decode(secret: dict[str, Any] | None, key: str) -> str | None:
    """One key of a Secret's data, decoded; None if absent or not text."""
    raw = ((secret or {}).get("data") or {}).get(key)
    if not raw:
        return None
    try:
        return base64.b64decode(raw).decode()
    except (ValueError, UnicodeDecodeError):
        return None
