"""provision-database gives up at its timeout, saying what it waited for (no operator runs here),
and the label's Database request shows why it is not ready."""

from __future__ import annotations

import pytest
from fleetflow_dev.cnpg import chart_dir

from fleetflow.errors import PermanentError
from fleetflow.flows.install_operator import install_operator
from fleetflow.flows.provision_database import provision_database
from fleetflow.flows.register_cluster import register_cluster
from fleetflow.registry import Registry
from tests.support.dbaas_support import forget, label_database
from tests.support.local_fleet import LocalFleet

pytestmark = pytest.mark.integration


def test_a_database_that_never_becomes_ready_times_out_clearly(
    monkeypatch: pytest.MonkeyPatch, local_fleet: LocalFleet, prefect_api: str
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(local_fleet.kubeconfig))
    monkeypatch.setenv("FLEETFLOW_MGMT_CONTEXT", "mgmt")
    registry = Registry(local_fleet.client("mgmt"))
    registry.install()
    for name, labels in (("service-cluster", {"type": "services"}), ("wl-slow", {"postgres": "required"})):
        register_cluster(
            name=name,
            context=name if name != "wl-slow" else "workload-cluster",
            labels=labels,
            mgmt_context="mgmt",
        )
    service = local_fleet.client("service-cluster")
    try:
        install_operator(chart=str(chart_dir()), repository=None, version=None)  # the CRD, no controller
        with pytest.raises(
            PermanentError,
            match=r"Timeout: timed out after 3s waiting for Cluster wl-slow/cluster-wl-slow "
            r"on service-cluster to be healthy and Ready",
        ):
            provision_database(cluster="wl-slow", timeout_seconds=3)
        request = label_database(local_fleet, "wl-slow")
        assert request is not None
        [ready] = [c for c in request["status"]["conditions"] if c["type"] == "Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "Timeout")
    finally:
        forget(registry, "wl-slow")
        service.delete("postgresql.cnpg.io/v1", "Cluster", "cluster-wl-slow", "wl-slow")
