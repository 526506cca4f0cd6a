"""The work pool a stock Prefect worker serves the platform's deployments from.

The fleetflow executor is the platform's engine. ``fleetflow deploy --work-pool NAME`` also
points the same deployments at a Prefect work pool of type process, so that ``prefect worker
start --pool NAME`` runs them instead, each run a new Python process that imports the flow
from the fleetflow installed where the worker runs (their entrypoints are module paths).

Such a run is watched by the same lost-heartbeats automation as an executor's runs (its
claim and start open the window), but it is Prefect's engine that sends its heartbeats, at
most every 30 s (the engine's floor). The deployments' job variables set that pace from the
repair interval, and a repair interval shorter than three such heartbeats is refused: a
healthy worker run would be crashed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from fleetflow.config import REPAIR_INTERVAL, REPAIR_INTERVAL_ENV, RepairInterval
from fleetflow.errors import UsageError

TYPE = "process"
ENGINE_HEARTBEAT_FLOOR = 30  # seconds: Prefect's engine sends heartbeats no more often
HEARTBEATS_PER_WINDOW = 3  # as the executor's: one late heartbeat crashes nothing
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
_BANNED = re.compile(r"[/%&><]")  # characters Prefect refuses in a work pool's name


@dataclass(frozen=True)
class WorkPool:
    """A process work pool's name and the job variables of the deployments pointed at it."""

    name: str
    job_variables: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_repair(cls, name: str, repair: RepairInterval) -> WorkPool:
        """The pool ``name``; its runs send heartbeats at the pace the repair interval expects."""
        if not name.strip() or _BANNED.search(name):
            raise UsageError(f"--work-pool: {name!r} is not a work pool name (non-empty, none of / % & > <)")
        shortest = ENGINE_HEARTBEAT_FLOOR * HEARTBEATS_PER_WINDOW
        if repair.window < shortest:
            raise UsageError(
                f"--work-pool: runs on a Prefect worker send heartbeats at most every "
                f"{ENGINE_HEARTBEAT_FLOOR} s, so the repair interval ({REPAIR_INTERVAL_ENV} or "
                f"{REPAIR_INTERVAL}) must be at least {shortest} s, not {repair.window:g} s"
            )
        every = max(ENGINE_HEARTBEAT_FLOOR, int(repair.window // HEARTBEATS_PER_WINDOW))
        return cls(name, {"env": {HEARTBEAT_ENV: str(every)}})


def ensure(name: str) -> bool:
    """Create the process work pool ``name`` if it is missing; True if this call created it.

    An existing pool of another type is refused: a process worker would never serve it."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            found = client.read_work_pool(name)
        except ObjectNotFound:
            wanted = WorkPoolCreate(
                name=name, type=TYPE, base_job_template=ProcessWorker.get_default_base_job_template()
            )
            try:
                client.create_work_pool(wanted)
            except ObjectAlreadyExists:  # a worker started with the pool's name made it meanwhile
                found = client.read_work_pool(name)
            else:
                return True
    if found.type != TYPE:
        raise UsageError(
            f"--work-pool: work pool {name!r} is of type {found.type!r}; fleetflow's deployments need "
            f"a {TYPE!r} pool (give another name)"
        )
    return False
