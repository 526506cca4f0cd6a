"""The policy table: which labels ask for which action. Automations and reconcile both read it.

Why one table: two parts of the platform decide from a cluster's labels what should run. The
automations (``deployments/automations.py``: Prefect triggers on the label watcher's events) act
at once; reconcile (``flows/reconcile.py``: every 5 minutes) repairs what events missed. Written
twice, they would drift (changing ``postgres=required`` to ``postgres=optional`` firing no
automation, yet the next reconcile deprovisioning the database). Here each row is written
once, as a label selector in ``kubectl -l`` syntax, and both read it: :func:`wanted`
evaluates the selector on a cluster's labels (reconcile), :func:`triggers` turns the same
selector into Prefect match specifications (automations). ``tests/databases/test_policy.py``
proves, row by row, that the two agree under Prefect's own matching rules on the events the
watcher really emits.

Semantics, as a platform engineer reads the table:

- **A database exists while its cluster says ``postgres=required``, and only then.** Removing
  the label, or changing it to any other value (``optional``, ``no``, empty), means the cluster
  no longer asks: the deletion policy applies (Retain by default: the data stays, marked
  orphaned, and is handed back when the label returns; Delete removes it). ``postgres!=required``
  has Kubernetes' selector meaning, so it includes clusters without the label, and
  ``fleetflow cluster list -l postgres!=required`` lists exactly the clusters it applies to.
  Both paths act on it: reconcile on its next run, the automation at once.
- **Rules are level-triggered.** A rule fires on every event of its kinds whose labels satisfy
  its selector, not only on the change that made it true (as install-operator and
  provision-database always did). Every action is idempotent, so a repeat costs a run and
  changes nothing, and an action that failed is retried by the cluster's next event.
- **Some actions need state that labels do not carry.** Deprovisioning needs a placed database,
  deploying the app needs delivered credentials. A run started by an automation checks this
  itself and does nothing without it; reconcile knows whether a database is placed and asks for
  deprovisioning only then (``needs_database``), and deploys the app with ``skip_unready``.

- **A row may follow an event that labels do not carry.** deploy-app also runs on
  ``fleetflow.credentials.published`` (with the cluster's labels on its resource), so the app
  follows a delivery. A rotated password needs no row: the label's database is a Database
  request, and the request watcher (``fleetflow/databases/watcher.py``) re-converges a request
  when its ``-app`` Secret changes (:data:`REQUEST_RULES`), which rewrites ``pg-credentials``
  wherever they were delivered.

How a selector becomes triggers (Prefect matches resource labels of the event; ``!`` negates a
glob, ``*`` matches anything, and a label absent from the event matches nothing, not even a
negation): the watcher puts every label on the event's resource as ``fleetflow.label.<key>``
and names each removed label as ``fleetflow.label-removed.<key>`` (``fleetflow/watcher.py``).
So ``k=v`` is ``fleetflow.label.k: v``; ``k`` (exists) is ``fleetflow.label.k: *``;
``k!=v`` is two triggers, ``fleetflow.label.k: !v`` (set to another value) or
``fleetflow.label-removed.k: *`` (just removed); ``!k`` is the removal alone. A cluster
registered without ``k`` cannot match ``k!=v`` or ``!k``: a rule using them must not need to
run for a new cluster (deprovisioning does not: a new cluster has no database). The agreement
test fails for any row where that does not hold.

This module is pure data and pure functions: it imports no Prefect (only the event names).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetflow.events import (
    CLUSTER_LABELED,
    CLUSTER_REGISTERED,
    CREDENTIALS_PUBLISHED,
    DATABASE_REQUEST_CHANGED,
)
from fleetflow.labels import Requirement, Selector

LABEL = "fleetflow.label."  # every current label of the cluster, on the event's resource
LABEL_REMOVED = "fleetflow.label-removed."  # labels the change removed, with their old values
FLEETFLOW_RESOURCES = "fleetflow.*"  # resource ids fleetflow emits: fleetflow.cluster.<name>, ...

CLUSTER_EVENTS = frozenset({CLUSTER_REGISTERED, CLUSTER_LABELED})


@dataclass(frozen=True)
class Rule:
    """One row: clusters whose labels match ``when`` want ``action`` run for them.

    ``action`` is the flow (and deployment) name; ``on`` the events that re-assert the rule at
    once; ``parameters`` what the automation passes besides the cluster; ``needs_database``
    that the action only applies where a database is placed.
    """

    action: str
    when: Selector
    on: frozenset[str]
    description: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    needs_database: bool = False

    def applies(self, labels: Mapping[str, str], has_database: bool) -> bool:
        return self.when.matches(labels) and (has_database or not self.needs_database)


RULES: tuple[Rule, ...] = (
    Rule(
        "install-operator",
        Selector.parse("type=services"),
        CLUSTER_EVENTS,
        "A service cluster gets the CloudNativePG operator.",
    ),
    Rule(
        "provision-database",
        Selector.parse("postgres=required"),
        CLUSTER_EVENTS,
        "A cluster asking for postgres gets its database (the Database fleetflow/<cluster> on it) "
        "and its credentials.",
    ),
    Rule(
        "deprovision-database",
        Selector.parse("postgres!=required"),
        frozenset({CLUSTER_LABELED}),
        "A cluster that no longer asks for postgres (label removed or set to another value) "
        "has its database retained (orphaned, data kept) or deleted, by the deletion policy.",
        needs_database=True,
    ),
    Rule(
        "deploy-app",
        Selector.parse("type=app"),
        CLUSTER_EVENTS | {CREDENTIALS_PUBLISHED},
        "An app cluster gets the todo-table Job where its credentials exist.",
        parameters={"skip_unready": True},
    ),
    Rule(
        "withdraw-app",
        Selector.parse("type!=app"),
        frozenset({CLUSTER_LABELED}),
        "A cluster no longer labelled type=app has the todo-table Job withdrawn.",
        needs_database=True,  # only a cluster that had a database can have had the app
    ),
)
"""In the order reconcile runs them for one cluster: the database before the app that uses it."""


@dataclass(frozen=True)
class RequestRule:
    """A row for Database request objects: an event about one request runs ``action`` for it.

    Requests are objects, not labels: the watcher emits ``fleetflow.database-request.changed``
    for a Database created, changed or deleted in any registered cluster (resource
    ``fleetflow.database-request.<cluster>.<namespace>.<name>``, payload ``request``), and
    reconcile runs the same action for every request whose status has not caught up.
    """

    action: str
    on: frozenset[str]
    description: str
    parameters: Mapping[str, str]  # Jinja templates over the event

    @property
    def match(self) -> dict[str, str]:
        return {"prefect.resource.id": "fleetflow.database-request.*"}


REQUEST_RULES: tuple[RequestRule, ...] = (
    RequestRule(
        "database-request",
        frozenset({DATABASE_REQUEST_CHANGED}),
        "A Database object created, changed or deleted in a registered cluster, or whose "
        "CloudNativePG Cluster or -app Secret changed, is converged: provisioned with its "
        "credentials next to it (a cluster label's also where the seed wants them), or its "
        "deletionPolicy applied.",
        {"request": "{{ event.payload.request }}"},
    ),
)


def wanted(labels: Mapping[str, str], has_database: bool, rules: tuple[Rule, ...] = RULES) -> list[Rule]:
    """The rows that apply to a cluster with these labels, in table order (what reconcile runs)."""
    return [rule for rule in rules if rule.applies(labels, has_database)]


@dataclass(frozen=True)
class TriggerSpec:
    """One Prefect event trigger of a rule, as plain data: ``match`` uses Prefect's syntax."""

    rule: Rule
    name: str
    expect: frozenset[str]
    match: dict[str, str]

    @property
    def description(self) -> str:
        return f"{self.rule.description} (when {self.rule.when})"


def _alternatives(req: Requirement) -> list[tuple[str, dict[str, str], frozenset[str] | None]]:
    """Ways an event can show ``req`` holding: (what it means, resource labels, only these events)."""
    now, gone = LABEL + req.key, LABEL_REMOVED + req.key
    removed = (f"{req.key} removed", {gone: "*"}, frozenset({CLUSTER_LABELED}))
    if req.op == "=":
        return [(f"{req.key}={req.value}", {now: req.value}, None)]
    if req.op == "exists":
        return [(f"{req.key} set", {now: "*"}, None)]
    if req.op == "!=":
        return [(f"{req.key} set to other than {req.value}", {now: f"!{req.value}"}, None), removed]
    return [removed]


def triggers(rule: Rule) -> list[TriggerSpec]:
    """The triggers that together fire ``rule`` for every event showing its selector holds."""
    keys = [r.key for r in rule.when.requirements]
    if len(set(keys)) != len(keys):
        raise ValueError(f"rule {rule.action}: one requirement per label key ({rule.when})")
    specs = []
    for combination in itertools.product(*(_alternatives(r) for r in rule.when.requirements)):
        expect = rule.on
        match = {"prefect.resource.id": FLEETFLOW_RESOURCES}
        for _, labels, only in combination:
            match.update(labels)
            expect = (expect & only) if only is not None else expect
        if not expect:
            continue
        said = ", ".join(what for what, _, _ in combination)
        specs.append(TriggerSpec(rule, f"{rule.action} when {said}", expect, match))
    return specs


def rule_for(action: str, rules: tuple[Rule, ...] = RULES) -> Rule:
    found = [rule for rule in rules if rule.action == action]
    if len(found) != 1:
        raise KeyError(f"the policy table has {len(found)} rows for {action!r}")
    return found[0]
