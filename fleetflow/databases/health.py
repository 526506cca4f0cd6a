"""A Database request's Ready condition against its CNPG Cluster's readiness.

CloudNativePG says when a Cluster's instances are down (phase not healthy, ``readyInstances``
0, Ready=False); a request provisioned on it must then say it is not ready either, and say it
is ready again once the Cluster is. The request watcher asks :func:`disagree` on every change of
a request's Cluster, and emits the request's event when they disagree; converge then writes the
request's status (``converge._provision``). The delivered credentials are never withdrawn for
an outage: the same password works again when the instance is back.
"""

from __future__ import annotations

from typing import Any

from fleetflow.databases import status
from fleetflow.dbaas import provision

RECOVERABLE = frozenset({status.UNAVAILABLE, "Timeout"})  # reasons a ready Cluster makes stale


def summary(cnpg: dict[str, Any]) -> str:
    """The Cluster's readiness in a few words (no secret): what a status message and a log say."""
    if provision.healthy(cnpg):
        return "ready"
    st = cnpg.get("status") or {}
    instances = st.get("instances", (cnpg.get("spec") or {}).get("instances", "?"))
    return (
        f"not ready ({st.get('phase') or 'no status yet'}, {st.get('readyInstances', 0)}/{instances} ready)"
    )


def disagree(cnpg: dict[str, Any], request: dict[str, Any]) -> bool:
    """Whether the request's Ready condition must change for this state of its Cluster."""
    if request["metadata"].get("deletionTimestamp"):
        return False
    ready, reason, _ = status.ready_of(request)
    if provision.healthy(cnpg):
        return ready != "True" and reason in RECOVERABLE
    return ready == "True"
