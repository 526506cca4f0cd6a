"""Names fleetflow's database domain writes and reads, in one place."""

from __future__ import annotations

from typing import Final

CNPG_API: Final = "postgresql.cnpg.io/v1"
CNPG_CRD: Final = "clusters.postgresql.cnpg.io"
HEALTHY: Final = "Cluster in healthy state"  # CloudNativePG's phase of a usable Cluster
MANAGED: Final = {"app.kubernetes.io/managed-by": "fleetflow"}

# Annotations on a CNPG Cluster: the request it was made for, and when it was orphaned (Retain).
REQUEST: Final = "fleetflow.io/database-request"
ORPHANED: Final = "fleetflow.io/orphaned"
# On a delivered credentials Secret: the source Secret (service cluster, uid, resourceVersion).
SOURCE_ANNOTATION: Final = "fleetflow.io/credentials-source"

# On a FleetCluster: where its label-path database lives, and where its credentials go.
SERVICE_CLUSTER_ANNOTATION: Final = "fleetflow.io/service-cluster"
DELIVERY_ANNOTATION: Final = "fleetflow.io/credentials-delivered-to"

# The label path: ``postgres=required`` on cluster C is the Database ``fleetflow/C`` on C.
LABEL_NAMESPACE: Final = "fleetflow"
REQUESTED_BY: Final = "fleetflow.io/requested-by"
CLUSTER_LABEL: Final = "cluster-label"

# What the seed delivers for the label path, and where its app runs.
CREDENTIALS_SECRET: Final = "pg-credentials"  # noqa: S105 - a Secret name, not a password
LOADBALANCER_CONFIGMAP: Final = "pg-loadbalancer-data"
APP_NAMESPACE: Final = "todo"
