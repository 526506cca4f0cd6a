"""The FleetCluster CustomResourceDefinition (group fleetflow.io, version v1alpha1).

Printer columns READY and VERSION match the seed's SveltosCluster table; ``--show-labels`` adds
LABELS. Status is a subresource so that probes never race with label or spec writes.
"""

from __future__ import annotations

from typing import Any, Final

GROUP: Final = "fleetflow.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "FleetCluster"
PLURAL: Final = "fleetclusters"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

KUBECONFIG_KEY: Final = "kubeconfig"


def kubeconfig_secret_name(cluster: str) -> str:
    return f"{cluster}-kubeconfig"


def definition() -> dict[str, Any]:
    status_schema = {
        "type": "object",
        "properties": {
            "ready": {"type": "boolean"},
            "version": {"type": "string"},
            "lastProbeTime": {"type": "string", "format": "date-time"},
            "reason": {"type": "string"},
            "message": {"type": "string"},
        },
    }
    spec_schema = {
        "type": "object",
        "required": ["kubeconfigSecretRef"],
        "properties": {
            "context": {"type": "string", "description": "kubeconfig context used at registration"},
            "kubeconfigSecretRef": {
                "type": "object",
                "required": ["name", "key"],
                "properties": {"name": {"type": "string"}, "key": {"type": "string"}},
            },
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/managed-by": "fleetflow"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": PLURAL,
                "singular": "fleetcluster",
                "kind": KIND,
                "shortNames": ["fc"],
                "categories": ["fleetflow"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Ready", "type": "boolean", "jsonPath": ".status.ready"},
                        {"name": "Version", "type": "string", "jsonPath": ".status.version"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": spec_schema, "status": status_schema},
                        }
                    },
                }
            ],
        },
    }
