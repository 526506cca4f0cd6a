"""The automations that make the platform react to cluster labels, generated from the policy table.

The table (``fleetflow.policy.RULES``) says which labels ask for which flow; reconcile reads the
same rows, so an event and the next reconcile never disagree about what a cluster should have.
Here each row becomes one or more Prefect triggers attached to the deployment of its flow.
Parameters are Jinja templates over the event; every key they use (``payload.cluster``) is in
every event a trigger can match, so no trigger fails to create its run for a missing key.

One automation is not a policy row: :func:`lost_heartbeats`, Prefect's "zombie flow run"
detection. A fleetflow executor sends ``prefect.flow-run.heartbeat`` for every run it holds; when
the executor is killed nobody marks its runs finished, and a run left Running blocks every later
run of its deployment and parameters. The automation marks such a run Crashed once its
heartbeats stop for the repair interval, saying why; surviving executors then run it again.
"""

from __future__ import annotations

from datetime import timedelta

from prefect.client.schemas.objects import StateType
from prefect.events import DeploymentEventTrigger
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

from fleetflow import policy
from fleetflow.config import RepairInterval

TAG = "fleetflow"  # every platform deployment's tag, so on every one of its runs and their events
LOST_HEARTBEATS_NAME = "fleetflow: crash runs whose executor stopped sending heartbeats"
LOST_HEARTBEATS = "no heartbeat from the fleetflow executor holding this run"
HEARTBEAT = "prefect.flow-run.heartbeat"
# A run is held from its claim: a claim or start event opens the window as a heartbeat does, so an
# executor killed before its first heartbeat reached the server leaves no run unwatched.
ALIVE_EVENTS = [HEARTBEAT, "prefect.flow-run.Pending", "prefect.flow-run.Running"]
FINAL_EVENTS = [f"prefect.flow-run.{name}" for name in ("Completed", "Failed", "Cancelled", "Crashed")]

FROM_PAYLOAD = "{{ event.payload.cluster }}"


def _trigger(spec: policy.TriggerSpec) -> DeploymentEventTrigger:
    return DeploymentEventTrigger(
        name=f"fleetflow: {spec.name}",
        description=spec.description,
        expect=set(spec.expect),
        match=dict[str, str | list[str]](spec.match),
        parameters={"cluster": FROM_PAYLOAD, **spec.rule.parameters},
        posture=Posture.Reactive,
        threshold=1,
        within=timedelta(0),
    )


def for_action(action: str) -> list[DeploymentEventTrigger]:
    """The triggers of the flow ``action``, from its row of the policy table."""
    return [_trigger(spec) for spec in policy.triggers(policy.rule_for(action))]


def database_request() -> list[DeploymentEventTrigger]:
    """The trigger of the Database request row: one run per event, for the request it names."""
    [rule] = [r for r in policy.REQUEST_RULES if r.action == "database-request"]
    return [
        DeploymentEventTrigger(
            name=f"fleetflow: {rule.action} on {', '.join(sorted(rule.on))}",
            description=rule.description,
            expect=set(rule.on),
            match=dict[str, str | list[str]](rule.match),
            parameters=dict(rule.parameters),
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        )
    ]


def install_operator() -> list[DeploymentEventTrigger]:
    return for_action("install-operator")


def provision_database() -> list[DeploymentEventTrigger]:
    return for_action("provision-database")


def fetch_credentials() -> list[DeploymentEventTrigger]:
    """None: fetch-credentials runs on demand; a rotation re-converges the label's Database
    request (the database-request row), which delivers the new password."""
    return []


def deploy_app() -> list[DeploymentEventTrigger]:
    return for_action("deploy-app")


def deprovision_database() -> list[DeploymentEventTrigger]:
    return for_action("deprovision-database")


def withdraw_app() -> list[DeploymentEventTrigger]:
    return for_action("withdraw-app")


def lost_heartbeats(repair: RepairInterval) -> AutomationCore:
    """Crash a platform run ``repair.window`` seconds after its last heartbeat, unless it ended.

    As Prefect's guide to zombie flow runs: per flow run, every heartbeat expects another
    heartbeat or a final state within the window (Proactive); so do the claim (Pending) and the
    start (Running), so that a run whose executor died before its first heartbeat arrived is
    caught too. Limited to runs of fleetflow's deployments (their tag), which fleetflow
    executors run and heartbeat. The state message starts with :data:`LOST_HEARTBEATS`: that is
    how executors tell this crash from others.
    """
    seconds = round(repair.window)
    return AutomationCore(
        name=LOST_HEARTBEATS_NAME,
        description=(
            f"A run of a fleetflow deployment whose executor sent no heartbeat for {seconds} s "
            "(the repair interval) is marked Crashed; a surviving executor runs it again."
        ),
        trigger=EventTrigger(
            after=set(ALIVE_EVENTS),
            expect={*ALIVE_EVENTS, *FINAL_EVENTS},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{TAG}"}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=seconds),
        ),
        actions=[
            ChangeFlowRunState(
                name=None,
                force=False,
                state=StateType.CRASHED,
                message=(
                    f"{LOST_HEARTBEATS} for {seconds} s: the process running it is gone "
                    "(a fleetflow executor runs it again)"
                ),
            )
        ],
    )
