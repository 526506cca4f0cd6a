"""A Database request's Ready condition against its CNPG Cluster's readiness.

CloudNativePG says when a Cluster's instances are down (phase not healthy, ``readyInstances``
0, Ready=False); a request provisioned on it must then say it is not ready either, and say it
is ready again once the Cluster is. The request watcher asks :func:`disagree` on every change of
a request's Cluster, and emits the request's event when they disagree; converge then writes the
request's status. The delivered credentials are never withdrawn for an outage: the same
password works again when the instance is back. The label path's database is a request like
any other, so the same watch and the same converge serve it.
"""

from __future__ import annotations

from typing import Any

from fleetflow.databases import status
from fleetflow.databases.views import CnpgCluster, DatabaseObject

RECOVERABLE = frozenset({status.UNAVAILABLE, "Timeout"})  # reasons a ready Cluster makes stale


def summary(cnpg: dict[str, Any]) -> str:
    """The Cluster's readiness in a few words (no secret): what a status message and a log say."""
    return CnpgCluster.of(cnpg).summary()


def disagree(cnpg: dict[str, Any], request: dict[str, Any]) -> bool:
    """Whether the request's Ready condition must change for this state of its Cluster."""
    return disagrees(CnpgCluster.of(cnpg), DatabaseObject.of(request))


def disagrees(cluster: CnpgCluster, db: DatabaseObject) -> bool:
    if db.meta.deleting:
        return False
    ready = db.status.ready
    if cluster.healthy:
        return ready.status != "True" and ready.reason in RECOVERABLE
    return ready.status == "True"
