"""Kubernetes access: the ONLY package that imports the kubernetes client or reads kubeconfigs.

Everything above it sees fleetflow's own types (:mod:`fleetflow.kube.types`) and errors
(:mod:`fleetflow.errors`), never the client library's, so the client can be replaced here alone.
Listing and watching is :mod:`fleetflow.kube.informer`'s alone (raw HTTP over asyncio,
:mod:`fleetflow.kube.transport`), run on the process's one watch loop (:mod:`fleetflow.kube.hub`).
"""

from fleetflow.kube.client import KubeClient, WaitTimeoutError
from fleetflow.kube.clients import client_for, client_from_config, forget_clients, probe
from fleetflow.kube.kubeconfig import Kubeconfig, contexts
from fleetflow.kube.kubeconfig import extract as extract_kubeconfig

__all__ = [
    "KubeClient",
    "Kubeconfig",
    "WaitTimeoutError",
    "client_for",
    "client_from_config",
    "contexts",
    "extract_kubeconfig",
    "forget_clients",
    "probe",
]
