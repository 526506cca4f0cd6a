"""Read and write the registry: FleetCluster objects and their kubeconfig Secrets.

Spec and status are written with server-side apply (field manager ``fleetflow``). Labels are
written with a JSON merge patch that carries the object's resourceVersion: two writers editing
labels at once get a 409 (retried by the caller) instead of one silently undoing the other.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetflow.errors import APIConflictError, APINotFoundError, UsageError
from fleetflow.kube import KubeClient, Kubeconfig, client_from_config
from fleetflow.labels import LabelEdit, Selector, validate, validate_dns_label
from fleetflow.registry import crd

MANAGED = {"app.kubernetes.io/managed-by": "fleetflow"}
CLUSTER_LABEL = "fleetflow.io/cluster"
EDIT_ATTEMPTS = 5  # a label edit re-applied after a concurrent write, at most
# Namespaces Kubernetes, fleetflow and CloudNativePG keep for themselves. A cluster's record lives
# in the namespace named after it, so that RBAC on that namespace grants a team its cluster and
# nothing else; a cluster registered under one of these would share it with far more.
RESERVED_NAMESPACES = frozenset({"default", "fleetflow-system", "cnpg-system"})


def validate_cluster_name(name: str) -> str:
    """A DNS-1123 label that is not a namespace Kubernetes or fleetflow keeps; else UsageError."""
    validate_dns_label(name, "cluster name")
    if name in RESERVED_NAMESPACES or name.startswith("kube-"):
        raise UsageError(
            f"invalid cluster name {name!r}: the cluster's namespace in the management cluster would be "
            "one Kubernetes or fleetflow keeps for itself, and RBAC on it would grant more than the cluster"
        )
    return name


@dataclass(frozen=True)
class ClusterRecord:
    """A registered cluster as the registry holds it (no credentials)."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    ready: bool | None = None
    version: str = ""
    last_probe_time: str = ""
    reason: str = ""
    message: str = ""
    uid: str = ""
    resource_version: str = ""
    created: str = ""  # metadata.creationTimestamp (RFC 3339, UTC: sorts as time)

    @property
    def namespace(self) -> str:
        return self.name

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ClusterRecord:
        """The typed view of a FleetCluster object: parsed here, and only here."""
        meta, status = _mapping(obj.get("metadata")), _mapping(obj.get("status"))
        ready = status.get("ready")
        return cls(
            name=str(meta["name"]),
            labels=_strings(meta.get("labels")),
            annotations=_strings(meta.get("annotations")),
            ready=ready if isinstance(ready, bool) else None,
            version=str(status.get("version") or ""),
            last_probe_time=str(status.get("lastProbeTime") or ""),
            reason=str(status.get("reason") or ""),
            message=str(status.get("message") or ""),
            uid=str(meta.get("uid") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
            created=str(meta.get("creationTimestamp") or ""),
        )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in _mapping(value).items()}


def kubeconfig_of(secret: Mapping[str, Any], where: str) -> tuple[Kubeconfig, str]:
    """A cluster's kubeconfig Secret: the kubeconfig, and its version (uid/resourceVersion)."""
    meta = _mapping(secret.get("metadata"))
    raw = _strings(secret.get("data")).get(crd.KUBECONFIG_KEY)
    if not raw:
        raise APINotFoundError(f"Secret {where} holds no {crd.KUBECONFIG_KEY}", status=404)
    config = Kubeconfig.from_yaml(base64.b64decode(raw).decode(), where)
    return config, f"{meta.get('uid', '')}/{meta.get('resourceVersion', '')}"


@dataclass(frozen=True)
class Probe:
    """What a probe of a cluster found."""

    ready: bool
    version: str = ""
    reason: str = ""
    message: str = ""


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Registry:
    """The registry in one management cluster."""

    def __init__(self, mgmt: KubeClient) -> None:
        self.mgmt = mgmt

    # -- the CRD -------------------------------------------------------------------------
    def install(self, timeout: float = 30.0) -> None:
        """Install or update the FleetCluster CRD and wait until it is served."""
        self.mgmt.apply(crd.definition())
        self.mgmt.wait_established(crd.CRD_NAME, timeout=timeout)

    # -- reads ---------------------------------------------------------------------------
    def get(self, name: str) -> ClusterRecord | None:
        obj = self.mgmt.get_or_none(crd.API_VERSION, crd.KIND, name, name)
        return ClusterRecord.from_object(obj) if obj else None

    def require(self, name: str) -> ClusterRecord:
        record = self.get(name)
        if record is None:
            raise APINotFoundError(f"cluster {name!r} is not registered", status=404)
        return record

    def list(self, selector: Selector | None = None) -> list[ClusterRecord]:
        """Registered clusters by name; with ``selector``, only those whose labels match it,
        filtered by the API server (a fleet of thousands is not sent whole to be filtered here)."""
        items, _ = self.mgmt.list(crd.API_VERSION, crd.KIND, label_selector=selector)
        return sorted((ClusterRecord.from_object(o) for o in items), key=lambda r: r.name)

    def _kubeconfig(self, name: str) -> tuple[Kubeconfig, str]:
        secret_name = crd.kubeconfig_secret_name(name)
        secret = self.mgmt.get("v1", "Secret", secret_name, name)
        return kubeconfig_of(secret, f"{name}/{secret_name}")

    def kubeconfig(self, name: str) -> Kubeconfig:
        """The stored credentials of a registered cluster: the only way to reach it."""
        return self._kubeconfig(name)[0]

    def client(self, name: str) -> KubeClient:
        """A client for a registered cluster, reused until its kubeconfig Secret changes."""
        config, version = self._kubeconfig(name)
        return client_from_config(config.data, config.context, version)

    # -- writes --------------------------------------------------------------------------
    def ensure_namespace(self, name: str) -> bool:
        """Create the cluster's namespace if missing; True if this call created it."""
        validate_cluster_name(name)
        if self.mgmt.get_or_none("v1", "Namespace", name) is not None:
            return False
        self.mgmt.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {**MANAGED, CLUSTER_LABEL: name}},
            }
        )
        return True

    def store_kubeconfig(self, name: str, kubeconfig: Kubeconfig, owner_uid: str | None = None) -> None:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": crd.kubeconfig_secret_name(name),
                "namespace": name,
                "labels": {**MANAGED, CLUSTER_LABEL: name},
            },
            "data": {crd.KUBECONFIG_KEY: base64.b64encode(kubeconfig.to_yaml().encode()).decode()},
        }
        if owner_uid:
            body["metadata"]["ownerReferences"] = [
                {
                    "apiVersion": crd.API_VERSION,
                    "kind": crd.KIND,
                    "name": name,
                    "uid": owner_uid,
                }
            ]
        self.mgmt.apply(body)

    def apply(self, name: str, context: str, labels: dict[str, str] | None = None) -> ClusterRecord:
        """Create the FleetCluster with its labels in one write, or update its spec and labels.

        A new object is created whole, so the label watcher sees it born with its labels (one
        ``registered`` event, no spurious ``labeled``). An existing one gets its spec by
        server-side apply and its labels by :meth:`set_labels` (None keeps them).

        The spec apply forces: the registry is the one authority over a FleetCluster's spec, and
        the create above wrote it as an Update, which a plain apply of a new context (a cluster
        re-registered under another context) would conflict with.
        """
        validate_cluster_name(name)
        body: dict[str, Any] = {
            "apiVersion": crd.API_VERSION,
            "kind": crd.KIND,
            "metadata": {"name": name, "namespace": name},
            "spec": {
                "context": context,
                "kubeconfigSecretRef": {"name": crd.kubeconfig_secret_name(name), "key": crd.KUBECONFIG_KEY},
            },
        }
        if self.get(name) is None:
            body["metadata"]["labels"] = validate(labels or {})
            return ClusterRecord.from_object(self.mgmt.create(body))
        record = ClusterRecord.from_object(self.mgmt.apply(body, force=True))
        return self.set_labels(name, labels) if labels is not None else record

    def set_labels(self, name: str, labels: dict[str, str]) -> ClusterRecord:
        """Make the cluster's labels exactly ``labels``."""
        wanted = validate(labels)
        current = self.require(name)
        patch: dict[str, Any] = {k: v for k, v in wanted.items() if current.labels.get(k) != v}
        patch.update({k: None for k in current.labels if k not in wanted})
        if not patch:
            return current
        return self._patch_metadata(current, "labels", patch)

    def annotate(self, name: str, annotations: dict[str, str | None]) -> ClusterRecord:
        """Set (or, with None, remove) annotations; concurrent writers get a 409 to retry."""
        return self._patch_metadata(self.require(name), "annotations", annotations)

    def _patch_metadata(self, current: ClusterRecord, field: str, changes: dict[str, Any]) -> ClusterRecord:
        """Merge-patch ``metadata.<field>`` guarded by the resourceVersion ``current`` was read at."""
        live = self.mgmt.merge_patch(
            crd.API_VERSION,
            crd.KIND,
            current.name,
            current.namespace,
            {
                "metadata": {"resourceVersion": current.resource_version, field: changes},
            },
        )
        return ClusterRecord.from_object(live)

    def edit_labels(self, name: str, edit: LabelEdit) -> ClusterRecord:
        """kubectl-style: add, overwrite and remove labels.

        The edit is relative, so when the record changed between the read and the write (a probe
        recorded its status: a 409 on the resourceVersion), it is applied again to the new state,
        as ``kubectl label`` would, a few times before the conflict is reported."""
        for _ in range(EDIT_ATTEMPTS - 1):
            with contextlib.suppress(APIConflictError):
                return self.set_labels(name, edit.applied_to(self.require(name).labels))
        return self.set_labels(name, edit.applied_to(self.require(name).labels))

    def record_probe(self, name: str, probe: Probe) -> ClusterRecord:
        status = {
            "ready": probe.ready,
            "version": probe.version,
            "lastProbeTime": now(),
            "reason": probe.reason,
            "message": probe.message,
        }
        live = self.mgmt.apply_status(
            {
                "apiVersion": crd.API_VERSION,
                "kind": crd.KIND,
                "metadata": {"name": name, "namespace": name},
                "status": status,
            }
        )
        return ClusterRecord.from_object(live)

    def deregister(self, name: str, *, delete_namespace: bool = False) -> bool:
        """Remove the FleetCluster and its kubeconfig Secret; False if it was not registered."""
        existed = self.mgmt.delete(crd.API_VERSION, crd.KIND, name, name)
        self.mgmt.delete("v1", "Secret", crd.kubeconfig_secret_name(name), name)
        if delete_namespace:
            self.mgmt.delete("v1", "Namespace", name)
        return existed


def connect(mgmt_context: str | None = None, kubeconfig: str | None = None) -> Registry:
    """The registry of the configured management cluster (see :func:`config.mgmt_context`)."""
    from fleetflow import config
    from fleetflow.kube import client_for

    return Registry(client_for(config.mgmt_context(mgmt_context), kubeconfig))
