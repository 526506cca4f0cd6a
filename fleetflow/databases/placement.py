"""Pick the service cluster for a Database request, and keep the choice.

With several service clusters (label ``type=services``, plus the request's
``serviceClusterSelector``) the choice must be stable: a database never moves because another
service cluster was registered. In order:

1. the service cluster recorded in the request's status, while it still qualifies;
2. a qualifying cluster that already holds this request's CNPG Cluster (a retained database,
   whose request was deleted and made again: it is adopted back, data and all);
3. the rendezvous-hash winner among the candidates (spreads requests evenly, deterministic,
   independent of the order clusters are listed in).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping

from fleetflow.databases.spec import RequestRef
from fleetflow.errors import PermanentError
from fleetflow.labels import Selector
from fleetflow.registry import ClusterRecord


def selector(extra: Mapping[str, str]) -> Selector:
    """``type=services`` and the request's own labels."""
    labels = {"type": "services", **extra}
    return Selector.parse(",".join(f"{k}={v}" for k, v in sorted(labels.items())))


def _score(requester: str, candidate: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{requester}/{candidate}".encode()).digest()[:8], "big")


def pick(requester: str, candidates: Iterable[str], recorded: str | None) -> str | None:
    """The recorded choice while it is still a candidate, else the rendezvous-hash winner
    (independent of the candidates' order); None if there are none."""
    names = set(candidates)
    if recorded in names:
        return recorded
    return max(sorted(names), key=lambda c: _score(requester, c)) if names else None


def place(
    records: Iterable[ClusterRecord],
    ref: RequestRef,
    recorded: str,
    extra: Mapping[str, str],
    holds_retained: Callable[[str], bool],
) -> str:
    """The service cluster for ``ref``; PermanentError when no registered cluster qualifies.
    ``holds_retained(candidate)`` says whether a candidate holds ``ref``'s CNPG Cluster."""
    wanted = selector(extra)
    candidates = sorted(r.name for r in records if wanted.matches(r.labels))
    if not candidates:
        raise PermanentError(
            f"no service cluster for {ref.cluster!r}: no registered cluster matches {wanted}"
        )
    if recorded in candidates:
        return recorded
    retained = [c for c in candidates if holds_retained(c)]
    return pick(str(ref), retained or candidates, None) or candidates[0]
