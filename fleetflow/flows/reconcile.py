"""reconcile: compare what the labels ask for with what exists, and repair the difference.

Run on a schedule (every 5 minutes by default), it heals what events cannot: an event lost
while a part was down, a database or Job deleted by hand, credentials gone stale after a
rotation. What a cluster's labels ask for comes from the policy table (``fleetflow.policy``),
the same rows the automations are generated from, so reconcile never undoes or adds to what an
event did. Every step is the same idempotent task the event-driven flows use, so on a healthy
fleet it writes nothing.

Each cluster is repaired on its own, so that one unreachable cluster (a task retrying its
connection) or one database that never becomes ready (a 300 s wait) holds up no other: each
cluster is one task run, ``repair-<cluster>``, up to ``CLUSTERS_AT_ONCE`` at a time, with its
own deadline (``timeout_seconds``, from when its repair starts); a cluster that fails or runs
out of time fails its own row and no other.

The deadline is cooperative: a Python thread cannot be interrupted inside a blocking call, so
no step starts after the deadline, and the readiness wait, the only long step, is given what
remains of it. (Prefect's task timeout is no better here: in a worker thread it also takes
effect only after the blocking call returns.)

Database requests are reconciled too, each as its own task run (the database-request flow's
task): every request except one failed for a reason only its owner can fix (an invalid spec, a
database name that cannot change). A converge of a ready request writes nothing; it is how a
rotated password or a deleted credentials Secret is noticed when no event said so.

Every run ends with one log line per cluster and the table artifact ``reconcile-outcome``: each
cluster, what its labels want, what was repaired, ``unchanged``/``repaired``/``failed``, how
long it took and why it failed. If any cluster failed, the run ends Failed, after every other
cluster was repaired, with a message naming the failed clusters: a Completed run means the
whole fleet matches its labels, and alerting on failed flow runs sees the rest. (If the registry
itself cannot be read, there are no clusters to isolate: the run fails at once.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from fleetflow import policy
from fleetflow.errors import PermanentError
from fleetflow.flows.reconcile_rows import (
    ARTIFACT_KEY,
    ClusterNotRepaired,
    Repaired,
    failure_message,
    request_row,
    row_of,
    summary,
)
from fleetflow.tasks.app import deploy_app_to, withdraw_app_from
from fleetflow.tasks.database import release_label_database, request_label_database
from fleetflow.tasks.databases import converge_request, requests_to_reconcile
from fleetflow.tasks.operator import helm_upgrade_install, read_registry

CLUSTERS_AT_ONCE = 8  # repairs in flight; each is I/O bound (API calls, watches, helm)


@dataclass(frozen=True)
class Settings:
    """The run's parameters that each cluster's repair uses."""

    chart: str
    repository: str | None
    version: str | None
    instances: int
    deletion_policy: Literal["Retain", "Delete"]
    mgmt_context: str | None


class DeadlineExceeded(Exception):
    """A cluster's repair ran out of its time before a step."""


@dataclass
class Deadline:
    seconds: float
    start: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self, before: str) -> float:
        """Seconds left; raises DeadlineExceeded, naming the step that would start, if none."""
        left = self.seconds - self.elapsed()
        if left <= 0:
            raise DeadlineExceeded(f"deadline of {self.seconds:g}s passed before {before}")
        return left


# -- the steps, one per row of the policy table: each returns what it repaired, or None ---------
Step = Callable[[str, Settings, Deadline], str | None]


def _install_operator(name: str, s: Settings, deadline: Deadline) -> str | None:
    result = helm_upgrade_install(
        name, s.chart, s.version, s.repository, "cnpg", "cnpg-system", None, "flow/reconcile", s.mgmt_context
    )
    return "operator" if result["changed"] else None


def _provision_database(name: str, s: Settings, deadline: Deadline) -> str | None:
    """The label's Database applied and converged: a stale credentials copy is rewritten too."""
    request = request_label_database(name, s.instances, s.deletion_policy, s.mgmt_context)
    if request is None:
        return None
    outcome = converge_request(request, deadline.left("converging the database"), s.mgmt_context)
    if outcome.phase == "Failed":
        raise PermanentError(outcome.detail)
    return "credentials" if outcome.published else None


def _deprovision_database(name: str, s: Settings, deadline: Deadline) -> str | None:
    outcome = release_label_database(name, s.deletion_policy, s.mgmt_context)
    return "released" if outcome.phase == "Deleted" else None


def _deploy_app(name: str, s: Settings, deadline: Deadline) -> str | None:
    deployed = deploy_app_to(name, None, True, s.mgmt_context)
    return "app" if deployed and deployed["job_outcome"] != "unchanged" else None


def _withdraw_app(name: str, s: Settings, deadline: Deadline) -> str | None:
    return "app" if withdraw_app_from(name, s.mgmt_context).startswith("withdrew") else None


STEPS: dict[str, Step] = {
    "install-operator": _install_operator,
    "provision-database": _provision_database,
    "deprovision-database": _deprovision_database,
    "deploy-app": _deploy_app,
    "withdraw-app": _withdraw_app,
}


@task(name="repair-cluster", task_run_name="repair-{name}", persist_result=False, cache_policy=NO_CACHE)
def repair_cluster(
    name: str, labels: dict[str, str], has_database: bool, settings: Settings, timeout_seconds: float
) -> Repaired:
    """Run, in table order, every action the policy table wants for this cluster, within its deadline.

    Raises ClusterNotRepaired (the task run fails) naming the action that failed and what was
    repaired before it.
    """
    deadline = Deadline(timeout_seconds)
    repaired: list[str] = []
    for rule in policy.wanted(labels, has_database):
        try:
            deadline.left(rule.action)
            what = STEPS[rule.action](name, settings, deadline)
        except Exception as exc:  # this cluster's failure, reported in its row
            cause = str(exc) if isinstance(exc, DeadlineExceeded) else f"{type(exc).__name__}: {exc}"
            raise ClusterNotRepaired(name, rule.action, repaired, deadline.elapsed(), cause) from exc
        if what:
            repaired.append(what)
    return Repaired(repaired, deadline.elapsed())


RUNNER: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=CLUSTERS_AT_ONCE)


@flow(name="reconcile", validate_parameters=True, task_runner=cast(Any, RUNNER))
def reconcile(
    chart: str = "cloudnative-pg",
    repository: str | None = "https://cloudnative-pg.github.io/charts",
    version: str | None = "0.22.1",
    instances: int = 3,
    timeout_seconds: float = 300.0,
    deletion_policy: Literal["Retain", "Delete"] = "Retain",
    mgmt_context: str | None = None,
) -> dict[str, list[str]] | State[Any]:
    """Make every registered cluster match its labels, each cluster on its own.

    Args:
        chart: operator chart for clusters labelled type=services (name, oci:// or local path).
        repository: chart repository URL.
        version: chart version.
        instances: PostgreSQL instances for databases that must be (re)created.
        timeout_seconds: the most one cluster's repair may take, its wait for a database to
            become usable included; a cluster that runs out fails its row, not the others.
        deletion_policy: what to do with databases whose cluster no longer has postgres=required.
        mgmt_context: the management cluster's context (default: fleetflow's configuration).
    """
    logger = get_run_logger()
    settings = Settings(chart, repository, version, instances, deletion_policy, mgmt_context)
    clusters = read_registry(mgmt_context)
    submitted = [
        (
            name,
            [rule.action for rule in policy.wanted(labels, placed)],
            repair_cluster.submit(name, labels, placed, settings, timeout_seconds),
        )
        for name, labels, placed in clusters
    ]
    requests = [
        (ref, converge_request.submit(ref, timeout_seconds, mgmt_context))
        for ref in requests_to_reconcile(mgmt_context)
    ]
    rows = []
    for name, wanted, future in submitted:
        future.wait()
        rows.append(row_of(name, wanted, future.result(raise_on_failure=False), future.state.message))
    for ref, request in requests:
        request.wait()
        rows.append(request_row(ref, request.result(raise_on_failure=False), request.state.message))
    for row in rows:
        (logger.error if row.outcome == "failed" else logger.info)(row.line())
    create_table_artifact(
        key=ARTIFACT_KEY,
        table=[row.table() for row in rows],
        description=f"reconcile: {len(rows)} clusters, "
        f"{sum(r.outcome == 'repaired' for r in rows)} repaired, "
        f"{sum(r.outcome == 'failed' for r in rows)} failed",
    )
    done = summary(rows)
    if done["failed"]:
        return Failed(message=failure_message(rows))
    logger.info("reconciled: %s", {k: v for k, v in done.items() if v} or "nothing to repair")
    return done
