"""``fleetflow deploy --work-pool``: the deployments a stock Prefect process worker can run."""

from __future__ import annotations

import pytest
from prefect.utilities.importtools import import_object

from fleetflow.config import RepairInterval
from fleetflow.deployments import platform
from fleetflow.deployments.work_pool import HEARTBEAT_ENV, WorkPool
from fleetflow.errors import UsageError


def test_every_deployment_names_the_pool_and_an_entrypoint_a_worker_imports_from_the_package() -> None:
    pool = WorkPool.for_repair("fleet-pool", RepairInterval(90))
    deployments = platform.build(pool=pool)
    assert [d.flow_name for d in deployments] == [f.name for f in platform.FLOWS]
    for deployment, flow in zip(deployments, platform.FLOWS, strict=True):
        assert deployment.work_pool_name == "fleet-pool"
        assert deployment.entrypoint is not None
        assert deployment.entrypoint.startswith("fleetflow.flows."), deployment.entrypoint
        assert ":" not in deployment.entrypoint  # a module path: no file relative to where deploy ran
        assert import_object(deployment.entrypoint) is flow  # what the worker's process loads
        assert deployment.job_variables == {"env": {HEARTBEAT_ENV: "30"}}


def test_without_a_pool_the_deployments_name_none() -> None:
    assert {d.work_pool_name for d in platform.build()} == {None}


@pytest.mark.parametrize(("window", "every"), [(90, "30"), (120, "40"), (600, "200")])
def test_worker_runs_beat_three_times_per_repair_window(window: float, every: str) -> None:
    pool = WorkPool.for_repair("p", RepairInterval(window))
    assert pool.job_variables["env"][HEARTBEAT_ENV] == every


def test_a_repair_window_shorter_than_three_engine_heartbeats_is_refused() -> None:
    with pytest.raises(UsageError, match="at least 90 s, not 60 s"):
        WorkPool.for_repair("p", RepairInterval(60))


@pytest.mark.parametrize("name", ["", " ", "a/b", "50%"])
def test_a_malformed_pool_name_is_refused(name: str) -> None:
    with pytest.raises(UsageError, match="not a work pool name"):
        WorkPool.for_repair(name, RepairInterval(90))
