"""Install the CloudNativePG operator with helm, and record what was installed where.

The record (one entry per cluster and release) lives in the management cluster, in the
ConfigMap ``fleetflow-system/addons``, so that ``fleetflow show addons`` prints the table the
seed shows for ``sveltosctl show addons`` from any machine.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fleetflow import config
from fleetflow.databases.names import MANAGED
from fleetflow.errors import BootstrapError
from fleetflow.kube import KubeClient
from fleetflow.kube.helm import Release, upgrade_install
from fleetflow.registry import Registry

ADDONS_NAMESPACE = "fleetflow-system"
ADDONS_CONFIGMAP = "addons"


@dataclass(frozen=True)
class Addon:
    cluster: str
    kind: str  # "helm chart"
    namespace: str
    name: str
    version: str
    time: str
    by: str  # e.g. "flow/install-operator"

    @property
    def key(self) -> str:
        return f"{self.cluster}.{self.namespace}.{self.name}"


def install_operator(
    registry: Registry,
    cluster: str,
    helm: Path,
    *,
    chart: str,
    version: str | None,
    repository: str | None,
    release: str = "cnpg",
    namespace: str = "cnpg-system",
    values: dict[str, Any] | None = None,
) -> Release:
    return upgrade_install(
        helm,
        registry.kubeconfig(cluster),
        release=release,
        chart=chart,
        namespace=namespace,
        version=version,
        repository=repository,
        values=values,
    )


def record(mgmt: KubeClient, addon: Addon) -> None:
    """Store (or refresh) one addon entry."""
    if mgmt.get_or_none("v1", "ConfigMap", ADDONS_CONFIGMAP, ADDONS_NAMESPACE) is None:
        mgmt.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ADDONS_NAMESPACE, "labels": MANAGED},
            }
        )
        mgmt.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": ADDONS_CONFIGMAP, "namespace": ADDONS_NAMESPACE, "labels": MANAGED},
            }
        )
    mgmt.merge_patch(
        "v1",
        "ConfigMap",
        ADDONS_CONFIGMAP,
        ADDONS_NAMESPACE,
        {"data": {addon.key: json.dumps(asdict(addon), sort_keys=True)}},
    )


def addons(mgmt: KubeClient) -> list[Addon]:
    cm = mgmt.get_or_none("v1", "ConfigMap", ADDONS_CONFIGMAP, ADDONS_NAMESPACE)
    data = cm.get("data") if cm else None
    entries = [Addon(**json.loads(v)) for v in (data or {}).values()]
    return sorted(entries, key=lambda a: (a.cluster, a.namespace, a.name))


def now() -> str:
    return dt.datetime.now(dt.UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S %z %Z")


def find_helm() -> Path:
    """``FLEETFLOW_HELM``, then the ``helm`` setting (the local fleet records the helm it built),
    then ``helm`` on PATH."""
    chosen = os.environ.get("FLEETFLOW_HELM") or config.setting(config.HELM) or shutil.which("helm")
    if chosen:
        return Path(chosen)
    raise BootstrapError("no helm binary: install helm (on PATH) or set FLEETFLOW_HELM to its path")
