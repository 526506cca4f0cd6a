"""Automations applied in place: a platform restart never leaves its events without a trigger.

Prefect's ``RunnerDeployment.apply`` deletes every automation a deployment owns and creates them
again. A platform that starts an executor with ``--deploy`` while another one runs (several
executors, a restart, an upgrade) then had a window in which no automation existed: a label
change or a Database request emitted in it triggered nothing, and waited for the 5-minute
reconcile. In a full test run on one Prefect server this lost a request's only event.

So deployments are applied without triggers, and their automations are kept here, by name and
not owned by the deployment (which would delete them): an unchanged automation is left alone, a
changed one is updated in place, a missing one created, and one of fleetflow's (named
``fleetflow: ...``) that the policy table no longer has is deleted.
"""

from __future__ import annotations

from typing import TypeAlias
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.events.schemas.automations import Automation, AutomationCore

PREFIX = "fleetflow: "  # every automation fleetflow makes is named so

Json: TypeAlias = dict[str, "Json"] | list["Json"] | str | int | float | bool | None


def comparable(automation: AutomationCore) -> Json:
    """What an automation does, without the ids Prefect generates for its triggers."""
    dumped: Json = automation.model_dump(mode="json", include=set(AutomationCore.model_fields))
    return _without_ids(dumped)


def _without_ids(value: Json) -> Json:
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


def plan(
    wanted: list[AutomationCore], existing: list[Automation], *, prune: bool = True
) -> tuple[list[AutomationCore], list[tuple[UUID, AutomationCore]], list[UUID]]:
    """(to create, (existing id, wanted) to update, existing ids to delete): nothing for an
    automation that is already as wanted. ``prune``: ``wanted`` is all of fleetflow's, so
    any other ``fleetflow: ...`` automation is a dropped row, deleted."""
    by_name: dict[str, list[Automation]] = {}
    for automation in existing:
        if automation.name.startswith(PREFIX):
            by_name.setdefault(automation.name, []).append(automation)
    create: list[AutomationCore] = []
    update: list[tuple[UUID, AutomationCore]] = []
    delete: list[UUID] = []
    for wanted_one in wanted:
        found = by_name.pop(wanted_one.name, [])
        delete.extend(a.id for a in found[1:])  # a second copy (two executors applied at once)
        if not found:
            create.append(wanted_one)
        elif comparable(found[0]) != comparable(wanted_one):
            update.append((found[0].id, wanted_one))
    if prune:
        delete.extend(a.id for copies in by_name.values() for a in copies)  # dropped from the policy
    return create, update, delete


def apply(wanted: list[AutomationCore], *, prune: bool = True) -> tuple[int, int, int]:
    """Make the server's fleetflow automations ``wanted`` (see :func:`plan` for ``prune``);
    returns (created, updated, deleted)."""
    with get_client(sync_client=True) as client:
        create, update, delete = plan(wanted, client.read_automations(), prune=prune)
        for automation in create:
            client.create_automation(automation)
        for automation_id, automation in update:
            # As client.update_automation, less the owner: the update schema refuses the field.
            body = automation.model_dump(mode="json", exclude_unset=True, exclude={"owner_resource"})
            client.request("PUT", "/automations/{id}", path_params={"id": automation_id}, json=body)
        for automation_id in delete:
            client.delete_automation(automation_id)
    return len(create), len(update), len(delete)
