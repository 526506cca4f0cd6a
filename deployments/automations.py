"""The automations that make the platform react to cluster labels, as in the seed.

Each is a trigger on a fleetflow event, attached to the deployment it runs. Parameters are
Jinja templates over the event; every key they use is present in every event the trigger can
match, so no trigger fails to create its run for a missing key.
"""

from __future__ import annotations

from typing import Any

from prefect.events import DeploymentEventTrigger

from fleetflow import events

CLUSTER_EVENTS = {events.CLUSTER_REGISTERED, events.CLUSTER_LABELED}
FROM_PAYLOAD = "{{ event.payload.cluster }}"


def _trigger(
    name: str, description: str, expect: set[str], match: dict[str, str], parameters: dict[str, Any]
) -> DeploymentEventTrigger:
    return DeploymentEventTrigger(
        name=f"fleetflow: {name}",
        description=description,
        expect=expect,
        match={"prefect.resource.id": "fleetflow.*", **match},
        parameters=parameters,
        posture="Reactive",
        threshold=1,
        within=0,
    )


def install_operator() -> list[DeploymentEventTrigger]:
    return [
        _trigger(
            "install-operator on service clusters",
            "A cluster registered or labelled type=services gets the CloudNativePG operator.",
            CLUSTER_EVENTS,
            {"fleetflow.label.type": "services"},
            {"cluster": FROM_PAYLOAD},
        )
    ]


def provision_database() -> list[DeploymentEventTrigger]:
    return [
        _trigger(
            "provision-database for postgres=required",
            "A cluster registered or labelled postgres=required gets its database (one per cluster).",
            CLUSTER_EVENTS,
            {"fleetflow.label.postgres": "required"},
            {"cluster": FROM_PAYLOAD},
        )
    ]


def deploy_app() -> list[DeploymentEventTrigger]:
    return [
        _trigger(
            "deploy-app when credentials are published",
            "Credentials arrived for a cluster labelled type=app: deploy the app.",
            {events.CREDENTIALS_PUBLISHED},
            {"fleetflow.label.type": "app"},
            {"cluster": FROM_PAYLOAD, "skip_unready": True},
        ),
        _trigger(
            "deploy-app on type=app",
            "A cluster labelled type=app gets the app where its credentials exist.",
            CLUSTER_EVENTS,
            {"fleetflow.label.type": "app"},
            {"cluster": FROM_PAYLOAD, "skip_unready": True},
        ),
    ]


def deprovision_database() -> list[DeploymentEventTrigger]:
    return [
        _trigger(
            "deprovision-database when postgres is removed",
            "The label postgres was removed: apply the deletion policy (Retain by default).",
            {events.CLUSTER_LABELED},
            {"fleetflow.label-removed.postgres": "*"},
            {"cluster": FROM_PAYLOAD},
        )
    ]
