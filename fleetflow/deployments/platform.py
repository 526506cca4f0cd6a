"""One deployment per flow, with typed parameters (a form in the Prefect UI) and its automations.

``apply_all`` registers deployments and automations with the Prefect API (re-running updates
them in place: never a duplicate, never a moment without them). The fleetflow executor runs
their flow runs; given a work pool, the same deployments also point at that pool, with
entrypoints into the installed package, so a stock ``prefect worker start --pool NAME`` of type
process can run them instead (:mod:`fleetflow.deployments.work_pool`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any
from uuid import UUID

from prefect import Flow
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentTriggerTypes, TriggerTypes
from prefect.events.schemas.automations import AutomationCore
from prefect.types.entrypoint import EntrypointType

from fleetflow import config
from fleetflow.deployments import automations, sync_automations, work_pool
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

Triggers = list[DeploymentTriggerTypes | TriggerTypes]


def _triggers(found: Sequence[DeploymentTriggerTypes]) -> Triggers:
    return list(found)


def build(
    operator_chart: dict[str, Any] | None = None,
    deletion_policy: str = "Retain",
    pool: work_pool.WorkPool | None = None,
) -> list[RunnerDeployment]:
    """The platform's deployments; ``operator_chart`` overrides install-operator's chart parameters.

    Entrypoints are module paths (``fleetflow.flows.register_cluster.register_cluster``): a
    worker imports the flow from the fleetflow installed where it runs, whatever its directory.
    With ``pool``, each deployment names that work pool and its job variables.
    """
    tags = [automations.TAG]

    def deployment(
        flow: Flow[..., Any],
        description: str,
        *,
        triggers: Triggers | None = None,
        parameters: dict[str, Any] | None = None,
        interval: int | None = None,
    ) -> RunnerDeployment:
        return RunnerDeployment.from_flow(
            flow,
            NAME,
            tags=tags,
            description=description,
            triggers=triggers,
            parameters=parameters,
            interval=interval,
            entrypoint_type=EntrypointType.MODULE_PATH,
            work_pool_name=pool.name if pool else None,
            job_variables=pool.job_variables if pool else None,
        )

    return [
        deployment(register_cluster, "Register a cluster and its labels."),
        deployment(
            install_operator,
            "Install CloudNativePG on service clusters.",
            parameters=operator_chart or {},
            triggers=_triggers(automations.install_operator()),
        ),
        deployment(
            provision_database,
            "Provision a requesting cluster's database.",
            triggers=_triggers(automations.provision_database()),
            parameters={"deletion_policy": deletion_policy},
        ),
        deployment(
            fetch_credentials,
            "Deliver a database's credentials and address again, on demand (provision-database "
            "and a rotation's re-converge do it by themselves).",
            triggers=_triggers(automations.fetch_credentials()),
        ),
        deployment(
            deploy_app,
            "Apply the todo-table Job where credentials and type=app meet.",
            triggers=_triggers(automations.deploy_app()),
        ),
        deployment(
            deprovision_database,
            "Retain (default) or Delete a database whose cluster no longer asks for one.",
            triggers=_triggers(automations.deprovision_database()),
            parameters={"deletion_policy": deletion_policy},
        ),
        deployment(
            database_request,
            "Converge one Database request (CLUSTER/NAMESPACE/NAME): provision or finalise it.",
            triggers=_triggers(automations.database_request()),
        ),
        deployment(
            withdraw_app,
            "Withdraw the todo-table Job from a cluster no longer labelled type=app.",
            triggers=_triggers(automations.withdraw_app()),
        ),
        deployment(
            reconcile,
            "Every 5 minutes: repair what the labels ask for and what exists.",
            parameters={**(operator_chart or {}), "deletion_policy": deletion_policy},
            interval=RECONCILE_INTERVAL,
        ),
    ]


def _apply(deployment: RunnerDeployment) -> UUID:
    """``deployment.apply()`` from synchronous code: Prefect types it as "a UUID or, called
    from async code, a coroutine of one"; here it is the former."""
    applied = deployment.apply()
    if not isinstance(applied, UUID):
        raise TypeError(f"deployment {deployment.name}: apply returned {type(applied).__name__}")
    return applied


def apply_all(
    operator_chart: dict[str, Any] | None = None,
    deletion_policy: str = "Retain",
    pool: work_pool.WorkPool | None = None,
) -> list[str]:
    """Create or update every deployment and its automations; returns the deployments' ids.

    The deployments are applied without their triggers (Prefect would delete and re-create
    their automations, a window in which events trigger nothing), and the automations are then
    kept in place by :mod:`deployments.sync_automations`: unchanged ones are not touched.
    With ``pool``, the work pool is created first if missing (type process)."""
    if pool is not None:
        made = retrying(f"ensure work pool {pool.name}", partial(work_pool.ensure, pool.name))
        log.info("work pool %s %s", pool.name, "created" if made else "exists")
    ids: list[str] = []
    wanted: list[AutomationCore] = []
    for deployment in build(operator_chart, deletion_policy, pool):
        triggers, deployment.triggers = list(deployment.triggers), []
        deployment_id = retrying(f"apply deployment {deployment.name}", partial(_apply, deployment))
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
