"""The automations that make the platform react to cluster labels, generated from the policy table.

The table (``fleetflow.policy.RULES``) says which labels ask for which flow; reconcile reads the
same rows, so an event and the next reconcile never disagree about what a cluster should have.
Here each row becomes one or more Prefect triggers attached to the deployment of its flow.
Parameters are Jinja templates over the event; every key they use (``payload.cluster``) is in
every event a trigger can match, so no trigger fails to create its run for a missing key.
"""

from __future__ import annotations

from prefect.events import DeploymentEventTrigger

from fleetflow import policy

FROM_PAYLOAD = "{{ event.payload.cluster }}"


def _trigger(spec: policy.TriggerSpec) -> DeploymentEventTrigger:
    return DeploymentEventTrigger(
        name=f"fleetflow: {spec.name}",
        description=spec.description,
        expect=set(spec.expect),
        match=dict(spec.match),
        parameters={"cluster": FROM_PAYLOAD, **spec.rule.parameters},
        posture="Reactive",
        threshold=1,
        within=0,
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
            match=rule.match,
            parameters=dict(rule.parameters),
            posture="Reactive",
            threshold=1,
            within=0,
        )
    ]


def install_operator() -> list[DeploymentEventTrigger]:
    return for_action("install-operator")


def provision_database() -> list[DeploymentEventTrigger]:
    return for_action("provision-database")


def deploy_app() -> list[DeploymentEventTrigger]:
    return for_action("deploy-app")


def deprovision_database() -> list[DeploymentEventTrigger]:
    return for_action("deprovision-database")


def withdraw_app() -> list[DeploymentEventTrigger]:
    return for_action("withdraw-app")
