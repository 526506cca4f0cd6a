"""Names the seed uses, in one place."""

from __future__ import annotations

from typing import Final

SERVICE_CLUSTER_ANNOTATION: Final = "fleetflow.io/service-cluster"
SOURCE_ANNOTATION: Final = "fleetflow.io/credentials-source"
DELIVERY_ANNOTATION: Final = "fleetflow.io/credentials-delivered-to"
CREDENTIALS_SECRET: Final = "pg-credentials"  # noqa: S105 - a Secret name, not a password
LOADBALANCER_CONFIGMAP: Final = "pg-loadbalancer-data"
APP_NAMESPACE: Final = "todo"
CNPG_API: Final = "postgresql.cnpg.io/v1"
HEALTHY: Final = "Cluster in healthy state"
MANAGED: Final = {"app.kubernetes.io/managed-by": "fleetflow"}


def cnpg_cluster_name(cluster: str) -> str:
    return f"cluster-{cluster}"
