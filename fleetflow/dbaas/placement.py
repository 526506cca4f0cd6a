"""Pick the service cluster for a requesting cluster, and keep the choice.

With several service clusters (label ``type=services``) the choice must be stable: a database
never moves because another service cluster was registered. The first choice uses rendezvous
hashing (spreads requesters evenly, deterministic) and is recorded on the requester's
FleetCluster as the annotation ``fleetflow.io/service-cluster``; later runs keep it as long as
that cluster is still a service cluster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from fleetflow.dbaas.names import SERVICE_CLUSTER_ANNOTATION
from fleetflow.errors import PermanentError
from fleetflow.labels import Selector
from fleetflow.registry import Registry

SERVICES = Selector.parse("type=services")


def _score(requester: str, candidate: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{requester}/{candidate}".encode()).digest()[:8], "big")


def pick(requester: str, candidates: Iterable[str], recorded: str | None) -> str | None:
    """The service cluster for ``requester``: the recorded one while it is still a candidate,
    else the rendezvous-hash winner (independent of the candidates' order); None if there are none."""
    names = set(candidates)
    if recorded in names:
        return recorded
    return max(sorted(names), key=lambda c: _score(requester, c)) if names else None


def choose_service_cluster(registry: Registry, requester: str, selector: Selector = SERVICES) -> str:
    record = registry.require(requester)
    recorded = record.annotations.get(SERVICE_CLUSTER_ANNOTATION)
    chosen = pick(requester, (r.name for r in registry.list() if selector.matches(r.labels)), recorded)
    if chosen is None:
        raise PermanentError(
            f"no service cluster for {requester!r}: no registered cluster matches {selector}"
        )
    if chosen != recorded:
        registry.annotate(requester, {SERVICE_CLUSTER_ANNOTATION: chosen})
    return chosen


def recorded_service_cluster(registry: Registry, requester: str) -> str | None:
    record = registry.get(requester)
    return record.annotations.get(SERVICE_CLUSTER_ANNOTATION) if record else None
