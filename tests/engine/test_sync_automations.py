"""Automations are kept in place: applying the platform again changes only what changed, so
events never meet a moment without their trigger (Prefect's own apply deletes and re-creates)."""

from __future__ import annotations

import uuid
from typing import Any

from prefect.events.schemas.automations import Automation

from fleetflow.config import RepairInterval
from fleetflow.deployments import automations, sync_automations
from fleetflow.deployments.platform import build


def wanted() -> list[Any]:
    found = [automations.lost_heartbeats(RepairInterval(90))]
    deployment_id = uuid.uuid4()
    for deployment in build():
        for trigger in deployment.triggers:
            trigger.set_deployment_id(deployment_id)
            found.append(trigger.as_automation().model_copy(update={"owner_resource": None}))
    return found


def stored(automation: Any) -> Automation:
    """As the server returns it: an id of its own, and a fresh id in its trigger."""
    dumped = automation.model_dump()
    dumped["trigger"]["id"] = uuid.uuid4()
    return Automation.model_validate({**dumped, "id": uuid.uuid4()})


def test_every_deployed_trigger_and_the_heartbeat_automation_are_wanted() -> None:
    names = [a.name for a in wanted()]
    assert len(names) == len(set(names)), "two automations share a name"
    assert all(n.startswith(sync_automations.PREFIX) for n in names)
    assert automations.LOST_HEARTBEATS_NAME in names


def test_applying_the_same_automations_again_changes_nothing() -> None:
    automations_now = wanted()
    assert sync_automations.plan(automations_now, [stored(a) for a in automations_now]) == ([], [], [])


def test_only_what_changed_is_touched_and_nothing_but_fleetflows_is_deleted() -> None:
    automations_now = wanted()
    existing = [stored(a) for a in automations_now[1:]]  # the first is missing
    changed = automations_now[2].model_copy(update={"description": "new words"})
    existing.append(stored(automations_now[3]))  # a second copy: two executors applied at once
    old_row = stored(automations_now[4].model_copy(update={"name": "fleetflow: a row since removed"}))
    users = stored(automations_now[4].model_copy(update={"name": "nightly report"}))
    existing += [old_row, users]
    create, update, delete = sync_automations.plan(
        [*automations_now[:2], changed, *automations_now[3:]], existing
    )
    assert [a.name for a in create] == [automations_now[0].name]
    assert [(i, a.description) for i, a in update] == [(existing[1].id, "new words")]
    assert sorted(map(str, delete)) == sorted([str(existing[-3].id), str(old_row.id)])


def test_applying_one_automation_alone_leaves_the_others() -> None:
    automations_now = wanted()
    existing = [stored(a) for a in automations_now]
    changed = automations_now[0].model_copy(update={"description": "another window"})
    create, update, delete = sync_automations.plan([changed], existing, prune=False)
    assert (create, delete) == ([], [])
    assert [i for i, _ in update] == [existing[0].id]
