"""The cluster registry in the management cluster: one FleetCluster object per registered cluster.

Like Sveltos' SveltosCluster, a FleetCluster is namespaced and lives in a namespace named after
the cluster, next to the Secret holding its kubeconfig: RBAC on that one namespace then grants a
team its cluster's record and credentials and nothing else, and ``kubectl get fleetclusters -A
--show-labels`` reads like the seed's ``kubectl get sveltoscluster -A --show-labels``.
"""

from fleetflow.registry.crd import API_VERSION, KIND
from fleetflow.registry.store import ClusterRecord, Probe, Registry, connect, validate_cluster_name

__all__ = ["API_VERSION", "KIND", "ClusterRecord", "Probe", "Registry", "connect", "validate_cluster_name"]
