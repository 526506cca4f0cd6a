"""The Database CustomResourceDefinition (group fleetflow.io, version v1alpha1).

The API server refuses bad specs before fleetflow sees them: names are SQL identifiers,
``instances`` is 1 to 9, ``storage`` a plain binary quantity, the deletion policy one of two
words, and unknown fields are rejected by kubectl's strict field validation (the schema is
structural, so the server prunes anything else). The one change CloudNativePG cannot make, the
database name, is not refused here but in status, so that GitOps sees why it did not converge.
``kubectl get databases -A`` shows READY, ENDPOINT, SERVICE-CLUSTER and AGE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from fleetflow.kube import KubeClient

GROUP: Final = "fleetflow.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "Database"
PLURAL: Final = "databases"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"
FINALIZER: Final = "fleetflow.io/database"

SQL_NAME: Final = r"^[a-z_][a-z0-9_]{0,62}$"
DNS_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUANTITY: Final = r"^[1-9][0-9]{0,5}(Mi|Gi|Ti)$"
MAX_INSTANCES: Final = 9


def _spec_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "database": {
                "type": "string",
                "default": "app",
                "pattern": SQL_NAME,
                "description": "the database name (a lower-case SQL identifier); fixed once created",
            },
            "owner": {
                "type": "string",
                "pattern": SQL_NAME,
                "description": "the role owning the database (default: the database name)",
            },
            "instances": {
                "type": "integer",
                "default": 1,
                "minimum": 1,
                "maximum": MAX_INSTANCES,
                "description": "PostgreSQL instances of the CloudNativePG Cluster",
            },
            "storage": {
                "type": "string",
                "default": "1Gi",
                "pattern": QUANTITY,
                "description": "volume size per instance, e.g. 1Gi (Mi, Gi or Ti)",
            },
            "deletionPolicy": {
                "type": "string",
                "default": "Retain",
                "enum": ["Retain", "Delete"],
                "description": "on delete: keep the CNPG Cluster and its data (orphaned), or delete both",
            },
            "secretName": {
                "type": "string",
                "maxLength": 253,
                "pattern": DNS_SUBDOMAIN,
                "description": "the Secret in this namespace that receives the credentials "
                "(default: <name>-credentials)",
            },
            "serviceClusterSelector": {
                "type": "object",
                "additionalProperties": {"type": "string", "maxLength": 63},
                "maxProperties": 16,
                "description": "labels a service cluster must have (besides type=services)",
            },
        },
    }


def _status_schema() -> dict[str, Any]:
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer"},
        },
    }
    return {
        "type": "object",
        "properties": {
            "phase": {"type": "string"},
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "endpoint": {
                "type": "object",
                "properties": {"host": {"type": "string"}, "port": {"type": "integer"}},
            },
            "serviceCluster": {"type": "string"},
            "cnpgCluster": {"type": "string", "description": "namespace/name on the service cluster"},
            "database": {"type": "string", "description": "the database name as created"},
            "secretName": {"type": "string"},
            "observedGeneration": {"type": "integer"},
        },
    }


def definition() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/managed-by": "fleetflow"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": PLURAL,
                "singular": "database",
                "kind": KIND,
                "shortNames": ["fdb"],
                "categories": ["fleetflow"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint.host"},
                        {"name": "Port", "type": "integer", "jsonPath": ".status.endpoint.port"},
                        {"name": "Service-Cluster", "type": "string", "jsonPath": ".status.serviceCluster"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "metadata": {
                                    "type": "object",
                                    "properties": {"name": {"type": "string", "maxLength": 63}},
                                },
                                "spec": _spec_schema(),
                                "status": _status_schema(),
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }


def install(client: KubeClient, timeout: float = 30.0) -> None:
    """Server-side apply the CRD into one cluster and wait until it is Established (idempotent)."""
    client.apply(definition(), force=True)
    client.wait_established(CRD_NAME, timeout=timeout)
