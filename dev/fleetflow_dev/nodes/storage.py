"""A small local-path volume provisioner for the local fleet's nodes (one node per cluster).

CloudNativePG makes one PersistentVolumeClaim per instance, and nothing on the local fleet
provisions volumes (rancher's local-path-provisioner is not served by the Go module proxy).
This controller does what it does, on the machine that runs the fleet (the node's kubelet
shares its file system; only its network is a namespace of its own):

- it applies the default StorageClass ``local-path`` (provisioner ``fleetflow.io/local-path``,
  reclaim policy Delete, binding Immediate: with one node per cluster there is no choice of
  node to wait for), so the API server's DefaultStorageClass admission gives it to every claim
  that names no class;
- for each claim of that class that is Pending with no volume, it makes the directory
  ``<root>/<cluster>/volumes/<namespace>-<claim>-<uid>`` (mode 0777: CloudNativePG's
  PostgreSQL runs as uid 26) and a hostPath PersistentVolume ``pvc-<uid>`` for it, pre-bound to
  the claim (``claimRef`` with its uid) and pinned to the cluster's node; kube-controller-
  manager's PV controller binds the two;
- when a volume of ours is Released (its claim was deleted) or Failed with policy Delete, it
  removes the directory (only ever below ``<root>/<cluster>/volumes/``) and then the volume.
  The PV controller leaves these to us: ``pv.kubernetes.io/provisioned-by`` names a provisioner
  outside ``kubernetes.io/``, i.e. an external one.

What to do is decided by pure functions of the objects (:func:`needs_volume`,
:func:`unsupported`, :func:`volume_for`, :func:`reclaimable`, :func:`owned_path`);
:class:`Storage` reads the live objects, applies them and is level-triggered: a replayed event
finds the volume there already, or gone, and changes nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from fleetflow.errors import APIConflictError
from fleetflow.kube import KubeClient

log = logging.getLogger("fleetflow.nodes.storage")

PROVISIONER = "fleetflow.io/local-path"
STORAGE_CLASS = "local-path"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
HOSTNAME_LABEL = "kubernetes.io/hostname"
VOLUME_MODE = 0o777  # PostgreSQL in CloudNativePG's pods runs as uid 26
NAME_MAX = 255  # bytes in one file name
_IMMUTABLE = ("provisioner", "reclaimPolicy", "volumeBindingMode")


def storage_class() -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {DEFAULT_CLASS: "true"},
            "labels": {"app.kubernetes.io/managed-by": "fleetflow-fleet"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": False,
    }


def volumes_dir(root: Path, cluster: str) -> Path:
    return root / cluster / "volumes"


def needs_volume(pvc: dict[str, Any]) -> bool:
    """Whether ``pvc`` is ours and waits for a volume: class ``local-path``, Pending, none bound.

    A claim without a class is not ours (yet): the API server gives new claims the default
    class, and kube-controller-manager gives it to older ones; either change is an event.
    """
    spec, meta = pvc.get("spec") or {}, pvc.get("metadata") or {}
    return (
        spec.get("storageClassName") == STORAGE_CLASS
        and not spec.get("volumeName")
        and (pvc.get("status") or {}).get("phase", "Pending") == "Pending"
        and not meta.get("deletionTimestamp")
    )


def unsupported(pvc: dict[str, Any]) -> str | None:
    """Why a claim of ours cannot get a directory volume, or None."""
    spec = pvc.get("spec") or {}
    if spec.get("volumeMode", "Filesystem") != "Filesystem":
        return f"volumeMode {spec['volumeMode']} is not supported (directories only)"
    source = spec.get("dataSourceRef") or spec.get("dataSource")
    if source:
        return f"a data source ({source.get('kind', '?')} {source.get('name', '?')}) is not supported"
    if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
        return "it requests no storage"
    if not spec.get("accessModes"):
        return "it names no access mode"
    return None


def volume_name(pvc: dict[str, Any]) -> str:
    return f"pvc-{pvc['metadata']['uid']}"


def volume_path(root: Path, cluster: str, pvc: dict[str, Any]) -> Path:
    """``<root>/<cluster>/volumes/<namespace>-<name>-<uid>`` (the name shortened to fit a file name)."""
    meta = pvc["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    room = NAME_MAX - len(namespace) - len(uid) - 2
    return volumes_dir(root, cluster) / f"{namespace}-{name[:room]}-{uid}"


def volume_for(pvc: dict[str, Any], *, root: Path, cluster: str, node: str) -> tuple[Path, dict[str, Any]]:
    """The directory and the PersistentVolume that satisfy ``pvc`` on ``node``."""
    meta, spec = pvc["metadata"], pvc["spec"]
    path = volume_path(root, cluster, pvc)
    body = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": volume_name(pvc),
            "annotations": {PROVISIONED_BY: PROVISIONER},
            "labels": {"app.kubernetes.io/managed-by": "fleetflow-fleet"},
        },
        "spec": {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": list(spec["accessModes"]),
            "volumeMode": "Filesystem",
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}]}
                    ]
                }
            },
        },
    }
    return path, body


def reclaimable(pv: dict[str, Any]) -> bool:
    """Whether ``pv`` is a volume of ours whose claim is gone and whose policy says Delete."""
    annotations = (pv.get("metadata") or {}).get("annotations") or {}
    spec = pv.get("spec") or {}
    return (
        annotations.get(PROVISIONED_BY) == PROVISIONER
        and spec.get("persistentVolumeReclaimPolicy") == "Delete"
        and (pv.get("status") or {}).get("phase") in ("Released", "Failed")
    )


def owned_path(pv: dict[str, Any], root: Path, cluster: str) -> Path:
    """The volume's directory, if it is one this provisioner makes: directly below
    ``<root>/<cluster>/volumes/``. Anything else is a ValueError: never removed."""
    raw = ((pv.get("spec") or {}).get("hostPath") or {}).get("path")
    if not raw:
        raise ValueError("it has no hostPath")
    path = Path(raw)
    base = volumes_dir(root, cluster)
    if not path.is_absolute() or ".." in path.parts or path.parent != base or not path.name:
        raise ValueError(f"its path {raw} is not a directory below {base}")
    return path


def make_directory(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, VOLUME_MODE)  # not subject to the umask, unlike mkdir's mode


class Storage:
    """The provisioner for one cluster and its node (see the module docstring)."""

    name: str = "storage"
    watches: tuple[tuple[str, str], ...] = (
        ("v1", "PersistentVolumeClaim"),
        ("v1", "PersistentVolume"),
        ("storage.k8s.io/v1", "StorageClass"),
    )

    def __init__(self, cluster: str, root: Path, node: str | None = None) -> None:
        self.cluster = cluster
        self.root = root.expanduser().absolute()
        self.node = node or cluster
        self._reported: dict[tuple[str, str], str] = {}  # what was last said about a claim

    def setup(self, client: KubeClient) -> None:
        self._ensure_class(client)

    def keys(self, kind: str, obj: dict[str, Any]) -> list[Hashable]:
        meta = obj.get("metadata") or {}
        if kind == "PersistentVolumeClaim":
            return [("pvc", meta.get("namespace"), meta.get("name"))]
        if kind == "PersistentVolume":
            return [("pv", meta.get("name"))]
        if kind == "StorageClass" and meta.get("name") == STORAGE_CLASS:
            return [("class",)]
        return []

    def reconcile(self, client: KubeClient, key: Hashable) -> None:
        if not isinstance(key, tuple):
            return
        if key[0] == "pvc":
            self._claim(client, str(key[1]), str(key[2]))
        elif key[0] == "pv":
            self._volume(client, str(key[1]))
        elif key[0] == "class":
            self._ensure_class(client)

    def _ensure_class(self, client: KubeClient) -> None:
        wanted = storage_class()
        live = client.get_or_none("storage.k8s.io/v1", "StorageClass", STORAGE_CLASS)
        if live is not None:
            annotations = live["metadata"].get("annotations") or {}
            if all(live.get(k) == wanted[k] for k in _IMMUTABLE) and annotations.get(DEFAULT_CLASS) == "true":
                return
            if any(live.get(k) != wanted[k] for k in _IMMUTABLE):
                # These fields cannot change: a class of that name made otherwise is replaced.
                log.warning(
                    "nodes: %s: StorageClass %s is not ours as made; replacing it",
                    self.cluster,
                    STORAGE_CLASS,
                )
                client.delete("storage.k8s.io/v1", "StorageClass", STORAGE_CLASS)
        client.apply(wanted, force=True)
        log.info("nodes: %s: StorageClass %s (default, %s) applied", self.cluster, STORAGE_CLASS, PROVISIONER)

    def _claim(self, client: KubeClient, namespace: str, name: str) -> None:
        pvc = client.get_or_none("v1", "PersistentVolumeClaim", name, namespace)
        if pvc is None or not needs_volume(pvc):
            self._reported.pop((namespace, name), None)
            return
        reason = unsupported(pvc)
        if reason is not None:  # stays so until the claim changes, which is an event
            if self._reported.get((namespace, name)) != reason:
                log.warning("nodes: %s: PVC %s/%s gets no volume: %s", self.cluster, namespace, name, reason)
                self._reported[(namespace, name)] = reason
            return
        path, body = volume_for(pvc, root=self.root, cluster=self.cluster, node=self.node)
        if client.get_or_none("v1", "PersistentVolume", body["metadata"]["name"]) is not None:
            return  # made already; binding it is kube-controller-manager's
        make_directory(path)  # before the volume, so it never names a directory not there
        try:
            client.create(body)
        except APIConflictError:
            return  # made meanwhile (AlreadyExists)
        log.info(
            "nodes: %s: PVC %s/%s: volume %s (%s) at %s",
            self.cluster,
            namespace,
            name,
            body["metadata"]["name"],
            body["spec"]["capacity"]["storage"],
            path,
        )

    def _volume(self, client: KubeClient, name: str) -> None:
        pv = client.get_or_none("v1", "PersistentVolume", name)
        if pv is None or not reclaimable(pv):
            return
        try:
            path = owned_path(pv, self.root, self.cluster)
        except ValueError as exc:
            key = ("", name)
            if self._reported.get(key) != str(exc):
                log.warning("nodes: %s: volume %s is left alone: %s", self.cluster, name, exc)
                self._reported[key] = str(exc)
            return
        if path.exists():
            shutil.rmtree(path)  # first: a volume deleted first would leave the data behind
        client.delete("v1", "PersistentVolume", name)
        log.info("nodes: %s: volume %s released: %s removed", self.cluster, name, path)
