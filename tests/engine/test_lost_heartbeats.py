"""The repair of runs whose executor died: the automation as the Prefect server evaluates it,
the heartbeats an executor sends, and the ``repairInterval`` setting both take their pace from."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.server.events.schemas.automations import AutomationCore
from prefect.server.events.schemas.events import ReceivedEvent

from fleetflow import config
from fleetflow.deployments import automations
from fleetflow.errors import ConfigError
from fleetflow.executor.repair import heartbeat_parts

WINDOW = 12.0


def _server_automation() -> Any:
    made = automations.lost_heartbeats(config.RepairInterval(WINDOW))
    return AutomationCore.model_validate(made.model_dump(mode="json"))


def _run(tags: list[str]) -> FlowRun:
    return FlowRun(
        id=uuid.uuid4(), name="brave-fox", flow_id=uuid.uuid4(), deployment_id=uuid.uuid4(), tags=tags
    )


def _event(name: str, resource: dict[str, str], related: list[dict[str, str]]) -> ReceivedEvent:
    return ReceivedEvent(
        occurred=dt.datetime.now(dt.UTC), event=name, resource=resource, related=related, id=uuid.uuid4()
    )


def test_the_automation_crashes_a_run_silent_for_the_window_saying_why() -> None:
    automation = _server_automation()
    trigger = automation.trigger
    assert trigger.posture == "Proactive"
    assert trigger.within == dt.timedelta(seconds=WINDOW)
    alive = {automations.HEARTBEAT, "prefect.flow-run.Pending", "prefect.flow-run.Running"}
    assert trigger.after == alive, "a claim or a start opens the window, as a heartbeat does"
    assert trigger.expect == {*alive, *automations.FINAL_EVENTS}
    assert trigger.for_each == {"prefect.resource.id"}
    [action] = automation.actions
    assert action.type == "change-flow-run-state"
    assert action.state.value == "CRASHED"
    assert not action.force, "a run that finished meanwhile must stay finished"
    assert action.message.startswith(automations.LOST_HEARTBEATS)
    assert "12 s" in action.message


def test_an_executors_heartbeats_and_final_states_of_platform_runs_are_what_it_watches() -> None:
    trigger = _server_automation().trigger
    run = _run([automations.TAG, "other"])
    resource, related = heartbeat_parts(run)
    assert resource["prefect.resource.id"] == f"prefect.flow-run.{run.id}"
    assert trigger.covers(_event(automations.HEARTBEAT, resource, related))
    assert trigger.covers(_event("prefect.flow-run.Completed", resource, related))
    untagged = heartbeat_parts(_run(["someone-else"]))
    assert not trigger.covers(_event(automations.HEARTBEAT, *untagged)), "other software's runs"


def test_every_platform_deployment_carries_the_tag_the_automation_watches() -> None:
    from fleetflow.deployments.platform import build

    assert all(automations.TAG in (d.tags or []) for d in build())


def test_the_repair_interval_is_90_s_with_a_heartbeat_every_30_s_by_default() -> None:
    repair = config.repair_interval()
    assert (repair.window, repair.heartbeat) == (90.0, 30.0)


def test_the_repair_interval_comes_from_the_environment_then_the_settings_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config.save_setting(config.REPAIR_INTERVAL, "30")
    assert config.repair_interval().window == 30.0
    monkeypatch.setenv(config.REPAIR_INTERVAL_ENV, "15s")
    assert config.repair_interval() == config.RepairInterval(15.0)
    assert config.repair_interval().heartbeat == 5.0


@pytest.mark.parametrize("bad", ["soon", "5", "-90", "inf", "nan", "0"])
def test_a_repair_interval_prefect_cannot_use_is_refused_naming_its_source(
    bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.REPAIR_INTERVAL_ENV, bad)
    with pytest.raises(ConfigError, match=f"{config.REPAIR_INTERVAL_ENV} must be .* at least 10"):
        config.repair_interval()
