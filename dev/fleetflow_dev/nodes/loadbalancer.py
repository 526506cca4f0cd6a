"""Addresses for LoadBalancer Services on the local fleet, like k3s' ServiceLB or MetalLB in L2 mode.

Each cluster with a node has a pool, ``NodeAddresses(index).loadbalancer_pool()``
(``172.31.<index>.1`` to ``.254``). A Service of type LoadBalancer (with no
``spec.loadBalancerClass``: a class names another implementation) gets the lowest free
address of the pool, written to ``status.loadBalancer.ingress`` (the status subresource);
kube-proxy in the node's network namespace then answers on it, and the host routes the pool to
the node (neither is this module's part).

There is no state of its own: who holds what is read from the live Services every time. A
Service keeps the pool address it shows; one that was changed away from LoadBalancer has it
cleared, and a deleted one simply no longer holds it, so the address is free for the next. A
``spec.loadBalancerIP`` inside the pool is honoured when free (a Service waits for it while
another holds it); one outside the pool is never assigned. If two Services show the same
address (written by hand), the older keeps it. An exhausted pool leaves a Service pending,
logged, until an address is freed.

:func:`plan` is the whole decision, a pure function of the listed Services and the pool;
:class:`LoadBalancers` lists, plans and writes what changed.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from fleetflow.errors import APINotFoundError
from fleetflow.kube import KubeClient

log = logging.getLogger("fleetflow.nodes.loadbalancer")

KEY = ("services",)  # one decision for all the Services of a cluster


@dataclass(frozen=True)
class Change:
    """Write ``ip`` as the Service's only ingress address; None clears its pool address."""

    namespace: str
    name: str
    ip: str | None


@dataclass(frozen=True)
class Pending:
    namespace: str
    name: str
    reason: str


@dataclass(frozen=True)
class Plan:
    changes: list[Change]
    pending: list[Pending]
    assigned: dict[tuple[str, str], str]  # every LoadBalancer Service's address afterwards


def is_ours(svc: dict[str, Any]) -> bool:
    spec, meta = svc.get("spec") or {}, svc.get("metadata") or {}
    return (
        spec.get("type") == "LoadBalancer"
        and not spec.get("loadBalancerClass")
        and not meta.get("deletionTimestamp")
    )


def ingress_ips(svc: dict[str, Any]) -> list[str]:
    ingress = (((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress")) or []
    return [str(i["ip"]) for i in ingress if i.get("ip")]


def _key(svc: dict[str, Any]) -> tuple[str, str]:
    return str(svc["metadata"].get("namespace", "")), str(svc["metadata"]["name"])


def _age(svc: dict[str, Any]) -> tuple[str, str, str]:
    # RFC 3339 in UTC sorts as text; ties (same second) by namespace and name.
    return (str(svc["metadata"].get("creationTimestamp") or ""), *_key(svc))


def _requested(svc: dict[str, Any]) -> str | None:
    ip = (svc.get("spec") or {}).get("loadBalancerIP")
    return str(ip) if ip else None


def plan(services: Iterable[dict[str, Any]], pool: list[str]) -> Plan:
    """Which Services get which address of ``pool`` (in order of preference), and which wait."""
    in_pool = set(pool)
    ours = sorted((s for s in services if is_ours(s)), key=_age)
    others = [s for s in services if not is_ours(s)]
    taken: dict[str, tuple[str, str]] = {}
    assigned: dict[tuple[str, str], str] = {}
    # Addresses a Service shows and may keep: in the pool, not held by an older one, and the
    # one it asks for if it asks for one it can have.
    for svc in ours:
        shown = [ip for ip in ingress_ips(svc) if ip in in_pool]
        if not shown or shown[0] in taken:
            continue  # none, or shown by an older Service too: that one keeps it
        requested = _requested(svc)
        moves = requested and requested != shown[0] and requested in in_pool
        if moves and not any(o is not svc and requested in ingress_ips(o) for o in ours):
            continue  # it asks for another address, free: it moves there below
        taken[shown[0]] = _key(svc)
        assigned[_key(svc)] = shown[0]
    pending: list[Pending] = []
    free = [ip for ip in pool if ip not in taken]
    for svc in ours:
        key = _key(svc)
        if key in assigned:
            continue
        requested = _requested(svc)
        if requested is not None:
            if requested not in in_pool:
                pending.append(Pending(*key, f"spec.loadBalancerIP {requested} is outside the pool"))
                continue
            if requested in taken:
                holder = "/".join(taken[requested])
                pending.append(Pending(*key, f"spec.loadBalancerIP {requested} is held by {holder}"))
                continue
            address = requested
        elif free:
            address = free[0]
        else:
            pending.append(Pending(*key, f"the pool ({len(pool)} addresses) is exhausted"))
            continue
        free.remove(address)
        taken[address] = key
        assigned[key] = address
    changes = []
    for svc in ours:
        key = _key(svc)
        shown = [ip for ip in ingress_ips(svc) if ip in in_pool]
        if key in assigned and shown != [assigned[key]]:
            changes.append(Change(*key, assigned[key]))
        elif key not in assigned and shown:
            changes.append(Change(*key, None))  # it lost a duplicate, and waits for another
    for svc in others:
        if (svc.get("spec") or {}).get("type") != "LoadBalancer" and any(
            ip in in_pool for ip in ingress_ips(svc)
        ):
            changes.append(Change(*_key(svc), None))  # no longer a LoadBalancer: the address is free
    return Plan(changes, pending, assigned)


def status_body(change: Change) -> dict[str, Any]:
    ingress = [{"ip": change.ip, "ipMode": "VIP"}] if change.ip else []
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": change.name, "namespace": change.namespace},
        "status": {"loadBalancer": {"ingress": ingress}},
    }


def valid_pool(pool: list[str]) -> list[str]:
    for ip in pool:
        ipaddress.ip_address(ip)  # ValueError for anything that is not an address
    return pool


class LoadBalancers:
    """The allocator for one cluster's pool (see the module docstring)."""

    name: str = "loadbalancer"
    watches: tuple[tuple[str, str], ...] = (("v1", "Service"),)
    retry_pending = 30.0  # seconds: how often a pending Service is looked at without an event

    def __init__(self, cluster: str, pool: list[str]) -> None:
        self.cluster = cluster
        self.pool = valid_pool(list(pool))
        self._reported: dict[tuple[str, str], str] = {}

    def setup(self, client: KubeClient) -> None:
        pass

    def keys(self, kind: str, obj: dict[str, Any]) -> list[Hashable]:
        return [KEY]

    def reconcile(self, client: KubeClient, key: Hashable) -> float | None:
        """Assign and free addresses; returns when to look again (a Service is pending), or None."""
        services, _ = client.list("v1", "Service")
        decided = plan(services, self.pool)
        failures: list[Exception] = []
        for change in decided.changes:
            try:
                client.apply_status(status_body(change), force=True)
            except APINotFoundError:
                continue  # deleted meanwhile: it holds nothing
            except Exception as exc:  # the others are still written; the first failure is raised
                failures.append(exc)
                continue
            if change.ip:
                log.info(
                    "nodes: %s: Service %s/%s: %s", self.cluster, change.namespace, change.name, change.ip
                )
            else:
                log.info(
                    "nodes: %s: Service %s/%s: address freed", self.cluster, change.namespace, change.name
                )
        waiting = {(p.namespace, p.name): p.reason for p in decided.pending}
        for key_, reason in waiting.items():
            if self._reported.get(key_) != reason:
                log.warning("nodes: %s: Service %s/%s waits: %s", self.cluster, *key_, reason)
        self._reported = waiting
        if failures:
            raise failures[0]
        return self.retry_pending if waiting else None
