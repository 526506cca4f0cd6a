"""A Database request as fleetflow reads it: where it is, what it asks for, what it maps to.

The API server applies the schema's defaults and validation (:mod:`.crd`); the same defaults
and checks are repeated here so that an object written before a CRD upgrade, or a request built
by the CLI or the webhook before it is sent, is judged the same way, with a one-line reason.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from fleetflow.databases import crd
from fleetflow.databases.names import LABEL_NAMESPACE
from fleetflow.errors import UsageError
from fleetflow.labels import validate_dns_label

CNPG_NAME_MAX = 40  # CNPG derives Services and Pods (<name>-rw, <name>-1) from it: keep room


@dataclass(frozen=True, order=True)
class RequestRef:
    """``CLUSTER/NAMESPACE/NAME``: a Database object in a registered workload cluster."""

    cluster: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.cluster}/{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> RequestRef:
        parts = text.split("/")
        if len(parts) != 3:
            raise UsageError(f"invalid database reference {text!r}: expected CLUSTER/NAMESPACE/NAME")
        cluster, namespace, name = parts
        validate_dns_label(cluster, "cluster name")
        validate_dns_label(namespace, "namespace")
        validate_dns_label(name, "database request name")
        return cls(cluster, namespace, name)

    @classmethod
    def of(cls, cluster: str, obj: dict[str, Any]) -> RequestRef:
        meta = obj["metadata"]
        return cls(cluster, str(meta["namespace"]), str(meta["name"]))

    @property
    def resource_id(self) -> str:
        """The Prefect resource id of this request's events."""
        return f"fleetflow.database-request.{self.cluster}.{self.namespace}.{self.name}"


def label_ref(cluster: str) -> RequestRef:
    """The Database that the label ``postgres=required`` on registered cluster ``cluster`` stands
    for: ``fleetflow/<cluster>`` on that cluster. Named after the registered cluster, so that two
    names registered for one API server each have their own (as each has its own label)."""
    return RequestRef(cluster, LABEL_NAMESPACE, cluster)


def served_as(cluster: str, namespace: str, name: str, from_cluster_label: bool) -> RequestRef:
    """The request a Database seen on ``cluster``'s API server is served as: a cluster label's
    under the registered cluster it is named after, any other under ``cluster``."""
    if from_cluster_label and namespace == LABEL_NAMESPACE:
        return label_ref(name)
    return RequestRef(cluster, namespace, name)


def cnpg_name(ref: RequestRef) -> str:
    """The CNPG Cluster's name on the service cluster, in namespace ``ref.cluster``.

    The label's database keeps the seed's name, ``cluster-<cluster>``. Any other request's is
    deterministic, DNS-safe and unique per (namespace, name): a readable prefix cut to fit, and
    a hash of the full reference, so that ``a-b/c`` and ``a/b-c`` never share a Cluster; the
    prefix ``db-`` keeps them apart from ``cluster-<cluster>``.
    """
    if ref == label_ref(ref.cluster):
        return f"cluster-{ref.cluster}"
    digest = hashlib.sha256(f"{ref.namespace}/{ref.name}".encode()).hexdigest()[:8]
    prefix = f"db-{ref.namespace}-{ref.name}"[: CNPG_NAME_MAX - len(digest) - 1].rstrip("-")
    return f"{prefix}-{digest}"


def service_name(ref: RequestRef) -> str:
    """The CNPG Cluster's LoadBalancer Service: the seed's ``cluster-rw-lb`` for the label's
    database, ``<cnpg name>-lb`` for any other."""
    return "cluster-rw-lb" if ref == label_ref(ref.cluster) else f"{cnpg_name(ref)}-lb"


@dataclass(frozen=True)
class DatabaseSpec:
    database: str = "app"
    owner: str = ""
    instances: int = 1
    storage: str = "1Gi"
    deletion_policy: str = "Retain"
    secret_name: str = ""
    service_cluster_selector: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, name: str, spec: dict[str, Any]) -> DatabaseSpec:
        """The spec with defaults filled in; UsageError naming the first invalid field."""
        known = {
            "database",
            "owner",
            "instances",
            "storage",
            "deletionPolicy",
            "secretName",
            "serviceClusterSelector",
        }
        unknown = sorted(set(spec) - known)
        if unknown:
            raise UsageError(f"unknown field spec.{unknown[0]}")
        database = spec.get("database", "app")
        owner = spec.get("owner") or database
        for key, value in (("database", database), ("owner", owner)):
            if not isinstance(value, str) or not re.fullmatch(crd.SQL_NAME, value):
                raise UsageError(f"spec.{key} {value!r} is not a lower-case SQL name ({crd.SQL_NAME})")
        instances = spec.get("instances", 1)
        if isinstance(instances, bool) or not isinstance(instances, int) or not 1 <= instances <= 9:
            raise UsageError(f"spec.instances {instances!r} must be an integer from 1 to {crd.MAX_INSTANCES}")
        storage = spec.get("storage", "1Gi")
        if not isinstance(storage, str) or not re.fullmatch(crd.QUANTITY, storage):
            raise UsageError(f"spec.storage {storage!r} must be a size like 1Gi (Mi, Gi or Ti)")
        policy = spec.get("deletionPolicy", "Retain")
        if policy not in ("Retain", "Delete"):
            raise UsageError(f"spec.deletionPolicy {policy!r} must be Retain or Delete")
        secret = spec.get("secretName") or f"{name}-credentials"
        if not isinstance(secret, str) or len(secret) > 253 or not re.fullmatch(crd.DNS_SUBDOMAIN, secret):
            raise UsageError(f"spec.secretName {secret!r} is not a valid Secret name")
        selector = spec.get("serviceClusterSelector") or {}
        if not isinstance(selector, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
        ):
            raise UsageError("spec.serviceClusterSelector must map label keys to string values")
        return cls(database, owner, instances, storage, policy, secret, dict(selector))

    def to_spec(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "database": self.database,
            "instances": self.instances,
            "storage": self.storage,
            "deletionPolicy": self.deletion_policy,
        }
        if self.owner and self.owner != self.database:
            body["owner"] = self.owner
        if self.secret_name:
            body["secretName"] = self.secret_name
        if self.service_cluster_selector:
            body["serviceClusterSelector"] = dict(self.service_cluster_selector)
        return body


def manifest(ref: RequestRef, spec: DatabaseSpec) -> dict[str, Any]:
    """The Database object for ``ref`` (what ``kubectl apply`` would send)."""
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": ref.name, "namespace": ref.namespace},
        "spec": spec.to_spec(),
    }
