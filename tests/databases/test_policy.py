"""The automations and reconcile agree, row by row of the policy table.

Events come from the real label watcher (``LabelWatcher.observe``) for every change between
label sets built from the table's own keys and values; whether an automation fires is decided
by the Prefect server's own matching (``EventTrigger.covers``) on the triggers exactly as
``deployments.automations`` builds them; what reconcile wants is ``policy.wanted``, the function
reconcile calls. For every row:

- sound: an automation fires only where reconcile wants the action for the labels after the event
  (or would, once the state the labels do not carry, such as a placed database, is there);
- complete: every change that makes reconcile want an action fires its automation at once;
- level-triggered: every event of the row's kinds that shows its selector holding fires it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.events import DeploymentEventTrigger
from prefect.server.events.schemas.automations import AutomationCore
from prefect.server.events.schemas.events import ReceivedEvent

from fleetflow import events, policy
from fleetflow.databases.names import REQUEST
from fleetflow.databases.spec import label_ref
from fleetflow.databases.watcher import ClusterWatch
from fleetflow.deployments import automations
from fleetflow.watcher import LabelWatcher

CLUSTER = "wl-1"
UNRELATED = "tier"  # a label no row reads: changing it alone still emits an event


class _NoState:
    """The watcher persists what it emitted in the management cluster; here, nowhere."""

    def merge_patch(self, *args: Any) -> None:
        return None


def _object(labels: dict[str, str], version: str) -> dict[str, Any]:
    meta = {"name": CLUSTER, "uid": "uid-1", "resourceVersion": version, "labels": labels}
    return {"metadata": meta}


def watcher_event(before: dict[str, str] | None, after: dict[str, str] | None) -> events.FleetEvent:
    """What the watcher emits for a cluster going from ``before`` to ``after`` (None: not registered)."""
    emitted: list[events.FleetEvent] = []
    watcher = LabelWatcher(_NoState(), emit=emitted.extend)  # type: ignore[arg-type]
    if before is not None:
        watcher.observe(_object(before, "1"))
        watcher.flush()
        emitted.clear()
    if after is None:
        watcher.gone(CLUSTER)
    else:
        watcher.observe(_object(after, "2"))
    watcher.flush()
    assert len(emitted) == 1, emitted
    return emitted[0]


def credentials_event(labels: dict[str, str]) -> events.FleetEvent:
    """``fleetflow.credentials.published`` as ``tasks.databases.converge_request`` emits it."""
    return events.FleetEvent(
        events.CREDENTIALS_PUBLISHED,
        events.database_resource(CLUSTER, "service-cluster", labels),
        events.event_id(CLUSTER, "mgmt", "credentials", "uid/1"),
        {"cluster": CLUSTER, "service_cluster": "service-cluster", "target": f"mgmt:{CLUSTER}"},
    )


class _ServiceCluster:
    """The service cluster as the request watcher reads it: CLUSTER's label database's CNPG Cluster."""

    def get_or_none(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": namespace, "annotations": {REQUEST: LABEL_REQUEST}}}


LABEL_REQUEST = str(label_ref(CLUSTER))


def rotation_event() -> events.FleetEvent:
    """What the request watcher emits when the ``-app`` Secret of CLUSTER's label database changes."""
    emitted: list[events.FleetEvent] = []
    watch = ClusterWatch(None, "service-cluster", emitted.extend, 5)  # type: ignore[arg-type]
    labels = {"cnpg.io/cluster": f"cluster-{CLUSTER}"}
    meta = {"name": f"cluster-{CLUSTER}-app", "namespace": CLUSTER, "uid": "s-1", "resourceVersion": "7"}
    watch._rotated(_ServiceCluster(), {"metadata": {**meta, "labels": labels}})  # type: ignore[arg-type]
    [event] = emitted
    return event


def _server_trigger(trigger: DeploymentEventTrigger) -> Any:
    """The trigger as the Prefect server stores and evaluates it."""
    trigger.set_deployment_id(uuid.uuid4())
    return AutomationCore.model_validate(trigger.as_automation().model_dump(mode="json")).trigger


TRIGGERS = {r.action: [_server_trigger(t) for t in automations.for_action(r.action)] for r in policy.RULES}
TRIGGERS["database-request"] = [_server_trigger(t) for t in automations.database_request()]


def fires(action: str, event: events.FleetEvent) -> bool:
    received = ReceivedEvent(
        occurred=dt.datetime.now(dt.UTC),
        event=event.event,
        resource=event.resource,
        payload=event.payload,
        id=event.id,
    )
    return any(trigger.covers(received) for trigger in TRIGGERS[action])


def actions(labels: dict[str, str], has_database: bool = True) -> list[str]:
    """What reconcile runs for a cluster with these labels."""
    return [rule.action for rule in policy.wanted(labels, has_database)]


def label_sets() -> list[dict[str, str]]:
    """Every combination of: each key a row reads absent, set to a value a row names, or to another
    value; and an unrelated label absent or set."""
    values: dict[str, set[str | None]] = {UNRELATED: {None, "gold"}}
    for rule in policy.RULES:
        for req in rule.when.requirements:
            values.setdefault(req.key, {None, "something-else", ""}).add(req.value or "something")
    keys = sorted(values)
    combos = itertools.product(*(sorted(values[k], key=str) for k in keys))
    return [{k: v for k, v in zip(keys, combo, strict=True) if v is not None} for combo in combos]


def transitions() -> Iterator[tuple[dict[str, str] | None, dict[str, str]]]:
    """Registrations with every label set, and every change between two label sets."""
    sets = label_sets()
    for after in sets:
        yield None, after
        for before in sets:
            if before != after:
                yield before, after


CASES = [(before, after, watcher_event(before, after)) for before, after in transitions()]


def test_the_table_is_exercised_by_enough_cases() -> None:
    assert len(CASES) > 500
    assert {rule.action for rule in policy.RULES} == {
        "install-operator",
        "provision-database",
        "deprovision-database",
        "deploy-app",
        "withdraw-app",
    }


@pytest.mark.parametrize("rule", policy.RULES, ids=lambda r: r.action)
def test_an_automation_fires_only_where_reconcile_wants_the_action(rule: policy.Rule) -> None:
    for before, after, event in CASES:
        if fires(rule.action, event):
            assert rule in policy.wanted(after, has_database=True), (rule.action, before, after)
            assert event.event in rule.on
            assert event.payload["cluster"] == CLUSTER  # the trigger's parameter template renders
    for labels in label_sets():
        for other in (credentials_event(labels), rotation_event()):
            if fires(rule.action, other):
                assert rule in policy.wanted(labels, has_database=True), (rule.action, labels)
                assert other.event in rule.on


@pytest.mark.parametrize("rule", policy.RULES, ids=lambda r: r.action)
def test_every_change_that_makes_reconcile_want_an_action_fires_its_automation(rule: policy.Rule) -> None:
    for before, after, event in CASES:
        # A new cluster has no database; an existing one may or may not.
        for has_database in (False,) if before is None else (False, True):
            now = rule in policy.wanted(after, has_database)
            was = before is not None and rule in policy.wanted(before, has_database)
            if now and not was and rule.on & policy.CLUSTER_EVENTS:
                assert fires(rule.action, event), (rule.action, before, after)
            elif now and not was:
                # A row run on other events (deploy-app on a delivery): the change that makes it
                # apply makes provision-database apply too, and that delivers in its run.
                assert fires("provision-database", event), (rule.action, before, after)


@pytest.mark.parametrize("rule", policy.RULES, ids=lambda r: r.action)
def test_every_event_showing_a_rule_holds_fires_it(rule: policy.Rule) -> None:
    """Level-triggered: not only the change that made the rule hold, any later event shows it too
    (a run that failed is retried by the cluster's next event). An event shows a label that is
    set, or that it removes; a label that was never set is not on it (Prefect cannot match it)."""
    for before, after, event in CASES:
        shown = set(after) | (set(before or {}) - set(after))
        visible = all(req.key in shown for req in rule.when.requirements)
        if visible and rule.when.matches(after) and event.event in rule.on:
            assert fires(rule.action, event), (rule.action, before, after)
    for labels in label_sets():
        visible = all(req.key in labels for req in rule.when.requirements)
        for other in (credentials_event(labels), rotation_event()):
            expected = visible and rule.when.matches(labels) and other.event in rule.on
            assert fires(rule.action, other) == expected, (rule.action, labels, other.event)


def test_a_rotated_password_on_the_label_path_reconverges_its_database_request_only() -> None:
    """The label's database is a request: a rotation of its ``-app`` Secret runs database-request
    for it (the trigger's parameter renders from the payload), with a deterministic id; no label
    row runs."""
    event = rotation_event()
    assert event.id == rotation_event().id
    assert event.event == events.DATABASE_REQUEST_CHANGED
    assert event.payload["request"] == LABEL_REQUEST
    assert fires("database-request", event)
    assert not [rule.action for rule in policy.RULES if fires(rule.action, event)]


def test_deregistration_fires_nothing() -> None:
    for labels in label_sets():
        event = watcher_event(labels, None)
        assert not [rule.action for rule in policy.RULES if fires(rule.action, event)], labels


@pytest.mark.parametrize("new_value", ["optional", "", None], ids=["optional", "empty", "removed"])
def test_leaving_postgres_required_deprovisions_in_both_paths(new_value: str | None) -> None:
    """The disagreement this table ended: required -> optional fired nothing, reconcile deprovisioned."""
    before = {"postgres": "required", "type": "app"}
    after = {"type": "app"} if new_value is None else {"postgres": new_value, "type": "app"}
    event = watcher_event(before, after)
    assert actions(after) == ["deprovision-database", "deploy-app"]
    assert fires("deprovision-database", event)
    assert not fires("provision-database", event)
    # Back to required: provisioned (the retained database handed back), never deprovisioned.
    back = watcher_event(after, before)
    assert actions(before) == ["provision-database", "deploy-app"]
    assert fires("provision-database", back)
    assert not fires("deprovision-database", back)


def test_provision_and_deprovision_never_both_apply() -> None:
    for labels in label_sets():
        assert not {"provision-database", "deprovision-database"} <= set(actions(labels)), labels


def test_a_cluster_without_a_database_is_not_deprovisioned_by_reconcile() -> None:
    assert actions({"postgres": "optional"}, has_database=False) == []
    assert actions({}) == ["deprovision-database", "withdraw-app"]


def test_every_deployment_carries_exactly_the_triggers_of_its_row() -> None:
    from fleetflow.deployments.platform import build

    by_flow = {d.flow_name: sorted(t.name for t in d.triggers or []) for d in build()}
    for rule in policy.RULES:
        assert by_flow[rule.action] == sorted(f"fleetflow: {s.name}" for s in policy.triggers(rule))
    for request_rule in policy.REQUEST_RULES:
        [trigger] = [t for d in build() if d.flow_name == request_rule.action for t in d.triggers or []]
        assert set(trigger.expect) == set(request_rule.on)
        assert trigger.match.model_dump() == request_rule.match
        assert trigger.parameters == dict(request_rule.parameters)
    rows = {r.action for r in policy.RULES} | {r.action for r in policy.REQUEST_RULES}
    without_rows = {name for name, names in by_flow.items() if names} - rows
    assert not without_rows, "a deployment has triggers that are not in the policy table"


def test_a_selector_with_a_key_twice_is_refused() -> None:
    from fleetflow.labels import Selector

    rule = policy.Rule("x", Selector.parse("a!=b,a!=c"), policy.CLUSTER_EVENTS, "twice")
    with pytest.raises(ValueError, match="one requirement per label key"):
        policy.triggers(rule)
