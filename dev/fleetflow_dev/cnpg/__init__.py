"""A stand-in for the CloudNativePG operator, for the LOCAL FLEET ONLY.

The local fleet runs real kube-apiservers but no kubelet, so no Pod ever runs and the real
CloudNativePG operator cannot. This package stands in for it there, and nowhere else: it is
the only stand-in of the project, and it is never used against a real cluster.

- ``chart/`` is a Helm chart (``cloudnative-pg-local``) installed the way the real chart is
  (``helm upgrade --install cnpg CHART --namespace cnpg-system --create-namespace``). It holds
  CloudNativePG's real ``clusters.postgresql.cnpg.io`` CRD (v1.24.1, fetched from the Go module
  proxy by :func:`chart_dir`) and a ConfigMap that says what runs instead of the operator; no
  Deployment. :func:`install_chart` runs that command with fleetflow's helm.
- :class:`StandInController` honours CloudNativePG's contract for each ``postgresql.cnpg.io/v1``
  Cluster (section 2 of the shared facts, ``../shared/docs/facts.md``): a role and database of
  its own on one real PostgreSQL
  server per service cluster on 127.0.0.1 (:class:`supervisor.postgres.LocalPostgres`),
  the ``<cluster>-app`` Secret, the ``-rw``/``-ro``/``-r`` and additional Services (a
  LoadBalancer's ingress is 127.0.0.1, its port the server's), the Cluster's phase and Ready
  condition, and deletion through a finalizer. :func:`run` serves several service clusters
  until a stop event is set, reconciling with a few workers per service cluster.

What differs from the real operator, on purpose: one server stands in for all of a Cluster's
instances (the status reports the requested number as ready) and for every Cluster of its
service cluster, so the role and database are ``contract.sql_name(namespace, name)`` rather
than ``app`` (the secret says which); ports are the local server's, not 5432; the ``host``
of the secret (``<cluster>-rw``) resolves only inside a real cluster; only
``bootstrap.initdb`` is supported; there is no superuser secret, backup or failover.
"""

from fleetflow_dev.cnpg.chart_build import CHART_SOURCE, chart_dir
from fleetflow_dev.cnpg.contract import (
    API_VERSION,
    CRD_NAME,
    FINALIZER,
    KIND,
    PHASE_HEALTHY,
    PHASE_INVALID,
    PHASE_SETTING_UP,
    PHASE_UNABLE,
    is_ready,
)
from fleetflow_dev.cnpg.controller import (
    StandInController,
    default_root,
    destroy_servers,
    run,
    servers,
    stop_servers,
)
from fleetflow_dev.cnpg.install import RELEASE, RELEASE_NAMESPACE, install_chart

__all__ = [
    "API_VERSION",
    "CHART_SOURCE",
    "CRD_NAME",
    "FINALIZER",
    "KIND",
    "PHASE_HEALTHY",
    "PHASE_INVALID",
    "PHASE_SETTING_UP",
    "PHASE_UNABLE",
    "RELEASE",
    "RELEASE_NAMESPACE",
    "StandInController",
    "chart_dir",
    "default_root",
    "destroy_servers",
    "install_chart",
    "is_ready",
    "run",
    "servers",
    "stop_servers",
]
