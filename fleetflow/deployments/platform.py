"""One deployment per flow, with typed parameters (a form in the Prefect UI) and its automations.

``apply_all`` registers deployments and automations with the Prefect API (re-running updates
them in place: never a duplicate, never a moment without them); ``serve_all`` additionally runs
them in this process, polling for new runs every ``poll_seconds`` so a label change reaches a
running flow within about two seconds.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import Flow, serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events.schemas.automations import AutomationCore
from prefect.settings import (
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_RUNNER_POLL_FREQUENCY,
    temporary_settings,
)

from fleetflow import config
from fleetflow.deployments import automations, sync_automations
from fleetflow.deployments.retrying import retrying
from fleetflow.flows.database_request import database_request
from fleetflow.flows.deploy_app import deploy_app
from fleetflow.flows.deprovision_database import deprovision_database
from fleetflow.flows.fetch_credentials import fetch_credentials
from fleetflow.flows.install_operator import install_operator
from fleetflow.flows.provision_database import provision_database
from fleetflow.flows.reconcile import reconcile
from fleetflow.flows.register_cluster import register_cluster
from fleetflow.flows.withdraw_app import withdraw_app

NAME = "fleetflow"
log = logging.getLogger("fleetflow.deploy")
RECONCILE_INTERVAL = 300  # seconds
FLOWS: list[Flow[..., Any]] = [
    register_cluster,
    install_operator,
    provision_database,
    fetch_credentials,
    deploy_app,
    deprovision_database,
    database_request,
    withdraw_app,
    reconcile,
]  # every deployed flow, in the order of ``build``


def build(
    operator_chart: dict[str, Any] | None = None, deletion_policy: str = "Retain"
) -> list[RunnerDeployment]:
    """The platform's deployments; ``operator_chart`` overrides install-operator's chart parameters."""
    tags = [automations.TAG]
    return [
        register_cluster.to_deployment(NAME, tags=tags, description="Register a cluster and its labels."),
        install_operator.to_deployment(
            NAME,
            tags=tags,
            parameters=operator_chart or {},
            triggers=automations.install_operator(),
            description="Install CloudNativePG on service clusters.",
        ),
        provision_database.to_deployment(
            NAME,
            tags=tags,
            triggers=automations.provision_database(),
            description="Provision a requesting cluster's database.",
        ),
        fetch_credentials.to_deployment(
            NAME,
            tags=tags,
            triggers=automations.fetch_credentials(),
            description="Deliver a database's credentials and address (provision-database does it too); "
            "a rotated password at once.",
        ),
        deploy_app.to_deployment(
            NAME,
            tags=tags,
            triggers=automations.deploy_app(),
            description="Apply the todo-table Job where credentials and type=app meet.",
        ),
        deprovision_database.to_deployment(
            NAME,
            tags=tags,
            triggers=automations.deprovision_database(),
            parameters={"deletion_policy": deletion_policy},
            description="Retain (default) or Delete a database whose cluster no longer asks for one.",
        ),
        database_request.to_deployment(
            NAME,
            tags=tags,
            triggers=automations.database_request(),
            description="Converge one Database request (CLUSTER/NAMESPACE/NAME): provision or finalise it.",
        ),
        withdraw_app.to_deployment(
            NAME,
            tags=tags,
            triggers=automations.withdraw_app(),
            description="Withdraw the todo-table Job from a cluster no longer labelled type=app.",
        ),
        reconcile.to_deployment(
            NAME,
            tags=tags,
            interval=RECONCILE_INTERVAL,
            parameters={**(operator_chart or {}), "deletion_policy": deletion_policy},
            description="Every 5 minutes: repair what the labels ask for and what exists.",
        ),
    ]


def apply_all(operator_chart: dict[str, Any] | None = None, deletion_policy: str = "Retain") -> list[str]:
    """Create or update every deployment and its automations; returns the deployments' ids.

    The deployments are applied without their triggers (Prefect would delete and re-create
    their automations, a window in which events trigger nothing), and the automations are then
    kept in place by :mod:`deployments.sync_automations`: unchanged ones are not touched."""
    ids: list[str] = []
    wanted: list[AutomationCore] = []
    for deployment in build(operator_chart, deletion_policy):
        triggers, deployment.triggers = list(deployment.triggers), []
        deployment_id = retrying(f"apply deployment {deployment.name}", deployment.apply)
        ids.append(str(deployment_id))
        for trigger in triggers:
            trigger.set_deployment_id(deployment_id)
            wanted.append(trigger.as_automation().model_copy(update={"owner_resource": None}))
    wanted.append(automations.lost_heartbeats(config.repair_interval()))
    created, updated, deleted = retrying("apply the automations", lambda: sync_automations.apply(wanted))
    log.info(
        "automations: %d created, %d updated, %d deleted, %d unchanged",
        created,
        updated,
        deleted,
        len(wanted) - created - updated,
    )
    return ids


def apply_lost_heartbeats(repair: config.RepairInterval) -> None:
    """Create or update (by name, never a second copy) the automation crashing silent runs alone."""
    sync_automations.apply([automations.lost_heartbeats(repair)], prune=False)


def serve_all(
    operator_chart: dict[str, Any] | None = None, poll_seconds: float = 1.0, deletion_policy: str = "Retain"
) -> None:
    """Register and run the deployments here until interrupted, polling every ``poll_seconds``.

    The poll is set through Prefect's settings context: Prefect reads its environment once at
    import, so changing ``PREFECT_RUNNER_POLL_FREQUENCY`` in ``os.environ`` here would be ignored.
    Runs started this way send Prefect's own heartbeats, every repair-interval heartbeat but at
    least every 30 s (Prefect's floor), for the automation that crashes silent runs.
    """
    heartbeat = max(30, round(config.repair_interval().heartbeat))
    with temporary_settings(
        updates={
            PREFECT_RUNNER_POLL_FREQUENCY: max(1, int(poll_seconds)),
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY: heartbeat,
        }
    ):
        apply_all(operator_chart, deletion_policy)  # automations kept in place, as for executors
        deployments = build(operator_chart, deletion_policy)
        for deployment in deployments:
            deployment.triggers = []  # serve applies them again: without triggers, it leaves ours alone
        serve(*deployments, limit=8)
