"""reconcile: compare what the labels ask for with what exists, and repair the difference.

Run on a schedule (every 5 minutes by default), it heals what events cannot: an event lost
while a part was down, a database or Job deleted by hand, credentials gone stale after a
rotation. What a cluster's labels ask for comes from the policy table (``fleetflow.policy``),
the same rows the automations are generated from, so reconcile never undoes or adds to what an
event did. Every step is the same idempotent task the event-driven flows use, so on a healthy
fleet it writes nothing.

Each cluster is repaired on its own. Walking the clusters one after another, one unreachable
cluster (a task retrying its connection) or one database that never became ready (a 300 s
wait) stopped the repair of every cluster after it. Now each cluster is one task run,
``repair-<cluster>``, up to ``CLUSTERS_AT_ONCE`` at a time, with its own deadline
(``timeout_seconds``, from when its repair starts); a cluster that fails or runs out of time
fails its own row and no other.

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
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from fleetflow import policy
from fleetflow.databases.converge import Outcome
from fleetflow.tasks.credentials import deliver_credentials, deploy_app_to, withdraw_app_from
from fleetflow.tasks.database import apply_database, deprovision_database, place_database
from fleetflow.tasks.databases import converge_request, requests_to_reconcile
from fleetflow.tasks.operator import helm_upgrade_install, read_registry

CLUSTERS_AT_ONCE = 8  # repairs in flight; each is I/O bound (API calls, watches, helm)
ARTIFACT_KEY = "reconcile-outcome"
REPAIRED = ("operator", "credentials", "app", "released", "request")  # what a step can report it repaired


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


@dataclass(frozen=True)
class Repaired:
    """A cluster brought in line with its labels; ``repaired`` is empty if nothing had to change."""

    repaired: list[str]
    seconds: float


class ClusterNotRepaired(Exception):
    """A cluster's repair failed at ``action``, after repairing ``repaired``."""

    def __init__(self, cluster: str, action: str, repaired: list[str], seconds: float, cause: str) -> None:
        super().__init__(f"{cluster}: {action}: {cause}")
        self.action, self.repaired, self.seconds, self.cause = action, repaired, seconds, cause


# -- the steps, one per row of the policy table: each returns what it repaired, or None ---------
Step = Callable[[str, Settings, Deadline], str | None]


def _install_operator(name: str, s: Settings, deadline: Deadline) -> str | None:
    result = helm_upgrade_install(
        name, s.chart, s.version, s.repository, "cnpg", "cnpg-system", None, "flow/reconcile", s.mgmt_context
    )
    return "operator" if result["changed"] else None


def _provision_database(name: str, s: Settings, deadline: Deadline) -> str | None:
    service_cluster = place_database(name, s.mgmt_context)
    wait = deadline.left("applying the database")
    apply_database(service_cluster, name, s.instances, None, wait, s.mgmt_context)
    deadline.left("delivering the credentials")
    delivered = deliver_credentials(name, None, s.mgmt_context)
    return "credentials" if delivered["changed"] else None


def _fetch_credentials(name: str, s: Settings, deadline: Deadline) -> str | None:
    delivered = deliver_credentials(name, None, s.mgmt_context)  # stale after a rotation: rewritten
    return "credentials" if delivered["changed"] else None


def _deprovision_database(name: str, s: Settings, deadline: Deadline) -> str | None:
    outcome = deprovision_database(name, s.deletion_policy, s.mgmt_context)
    return "released" if outcome.startswith(("deleted", "retained")) else None


def _deploy_app(name: str, s: Settings, deadline: Deadline) -> str | None:
    deployed = deploy_app_to(name, None, True, s.mgmt_context)
    return "app" if deployed and deployed["job_outcome"] != "unchanged" else None


def _withdraw_app(name: str, s: Settings, deadline: Deadline) -> str | None:
    return "app" if withdraw_app_from(name, s.mgmt_context).startswith("withdrew") else None


STEPS: dict[str, Step] = {
    "install-operator": _install_operator,
    "provision-database": _provision_database,
    "fetch-credentials": _fetch_credentials,
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


@dataclass(frozen=True)
class Row:
    """One cluster's outcome, as the artifact and the log show it."""

    cluster: str
    wanted: list[str]
    outcome: Literal["unchanged", "repaired", "failed"]
    repaired: list[str]
    seconds: float
    detail: str = ""

    def table(self) -> dict[str, str]:
        return {
            "cluster": self.cluster,
            "outcome": self.outcome,
            "wanted": ", ".join(self.wanted) or "-",
            "repaired": ", ".join(self.repaired) or "-",
            "seconds": f"{self.seconds:.1f}",
            "detail": self.detail,
        }

    def line(self) -> str:
        wants = f" ({', '.join(self.wanted)})" if self.wanted else " (nothing wanted)"
        took = f" in {self.seconds:.1f}s"
        if self.outcome == "failed":
            done = f"; repaired before that: {', '.join(self.repaired)}" if self.repaired else ""
            return f"{self.cluster}: FAILED{wants}{took}: {self.detail}{done}"
        if self.outcome == "repaired":
            return f"{self.cluster}: repaired {', '.join(self.repaired)}{wants}{took}"
        return f"{self.cluster}: unchanged{wants}{took}"


def row_of(cluster: str, wanted: list[str], result: Any, state_message: str | None) -> Row:
    """A cluster's row from what its task run returned (Repaired) or raised."""
    if isinstance(result, Repaired):
        outcome: Literal["unchanged", "repaired"] = "repaired" if result.repaired else "unchanged"
        return Row(cluster, wanted, outcome, result.repaired, result.seconds)
    if isinstance(result, ClusterNotRepaired):
        detail = f"{result.action}: {result.cause}"
        return Row(cluster, wanted, "failed", result.repaired, result.seconds, detail)
    # The task run itself crashed or was cancelled: its state says why.
    return Row(cluster, wanted, "failed", [], 0.0, state_message or f"{type(result).__name__}: {result}")


def request_row(ref: str, result: Any, state_message: str | None) -> Row:
    """A Database request's row: converged (its Secret rewritten or not) or failed, and why."""
    wanted = ["database-request"]
    if not isinstance(result, Outcome):
        return Row(ref, wanted, "failed", [], 0.0, state_message or f"{type(result).__name__}: {result}")
    if result.phase == "Failed":
        return Row(ref, wanted, "failed", [], 0.0, result.detail)
    changed = "written to" in result.detail or result.phase == "Deleted"
    return Row(
        ref,
        wanted,
        "repaired" if changed else "unchanged",
        ["request"] if changed else [],
        0.0,
        result.detail,
    )


def summary(rows: list[Row]) -> dict[str, list[str]]:
    """What was repaired where, and which clusters failed: the flow's result."""
    done: dict[str, list[str]] = {kind: [] for kind in REPAIRED}
    for row in rows:
        for kind in row.repaired:
            done[kind].append(row.cluster)
    done["failed"] = [row.cluster for row in rows if row.outcome == "failed"]
    return done


def _shortened(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failure_message(rows: list[Row]) -> str:
    """The failed run's message: every failed cluster, each with the start of why (the table has it all)."""
    failed = [row for row in rows if row.outcome == "failed"]
    named = "; ".join(f"{row.cluster} ({_shortened(row.detail)})" for row in failed)
    return (
        f"{len(failed)} of {len(rows)} clusters not repaired (the others were): {named}; "
        f"see the artifact {ARTIFACT_KEY}"
    )


@flow(
    name="reconcile",
    validate_parameters=True,
    task_runner=ThreadPoolTaskRunner(max_workers=CLUSTERS_AT_ONCE),
)
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
