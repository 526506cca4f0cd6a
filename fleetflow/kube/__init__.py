"""Kubernetes access: the ONLY package that imports the kubernetes client or reads kubeconfigs.

Everything above it sees fleetflow's own types (:mod:`fleetflow.kube.types`) and errors
(:mod:`fleetflow.errors`), never the client library's, so the client can be replaced here alone.
"""

from fleetflow.kube.client import KubeClient, client_for, forget_clients
from fleetflow.kube.kubeconfig import contexts

__all__ = ["KubeClient", "client_for", "contexts", "forget_clients"]
