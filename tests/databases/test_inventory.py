"""The rows of `fleetflow show databases` (and GET /v1/databases), from what was read."""

from __future__ import annotations

import pytest

from fleetflow.databases.names import SERVICE_CLUSTER_ANNOTATION
from fleetflow.databases.overview import Database, build_row, requests_database
from fleetflow.errors import APIForbiddenError, APIUnavailableError, ConfigError
from fleetflow.registry import ClusterRecord

HEALTHY = Database("Cluster in healthy state", orphaned=False, endpoint="127.0.0.1:5432")
UNREACHABLE = APIUnavailableError(
    "get Secret todo/pg-credentials in wl: cannot reach the API server\n  (MaxRetryError)"
)


def test_a_healthy_database_with_credentials_in_both_places() -> None:
    row = build_row("wl", "svc", HEALTHY, in_mgmt=True, in_workload=True)
    assert (row.cluster, row.service_cluster, row.phase, row.endpoint, row.credentials) == (
        "wl",
        "svc",
        "Cluster in healthy state",
        "127.0.0.1:5432",
        "mgmt,workload",
    )
    assert row.complete


@pytest.mark.parametrize(
    ("in_mgmt", "in_workload", "shown"),
    [(True, False, "mgmt"), (False, True, "workload"), (False, False, "no")],
)
def test_credentials_name_where_they_were_delivered(in_mgmt: bool, in_workload: bool, shown: str) -> None:
    assert build_row("wl", "svc", HEALTHY, in_mgmt, in_workload).credentials == shown


def test_a_requested_but_unplaced_database_is_not_provisioned() -> None:
    row = build_row("wl", None, None, in_mgmt=False, in_workload=False)
    assert (row.service_cluster, row.phase, row.endpoint, row.credentials) == (
        "",
        "Not provisioned",
        "",
        "no",
    )
    assert row.complete


def test_an_orphaned_database_says_it_is_retained_and_its_phase() -> None:
    orphan = Database("Cluster in healthy state", orphaned=True, endpoint="127.0.0.1:5432")
    row = build_row("wl", "svc", orphan, in_mgmt=False, in_workload=False)
    assert row.phase == "Orphaned, retained (Cluster in healthy state)"
    assert row.endpoint == "127.0.0.1:5432"


def test_an_unreadable_workload_cluster_is_shown_with_its_reason_on_one_line() -> None:
    row = build_row("wl", "svc", HEALTHY, in_mgmt=True, in_workload=UNREACHABLE)
    assert row.credentials == (
        "mgmt; workload unknown: get Secret todo/pg-credentials in wl: cannot reach the API server "
        "(MaxRetryError)"
    )
    assert not row.complete


def test_unknown_credentials_are_never_reported_as_none_delivered() -> None:
    row = build_row("wl", "svc", HEALTHY, in_mgmt=False, in_workload=UNREACHABLE)
    assert row.credentials == (
        "workload unknown: get Secret todo/pg-credentials in wl: cannot reach the API server (MaxRetryError)"
    )
    both = build_row("wl", "svc", HEALTHY, in_mgmt=APIForbiddenError("forbidden"), in_workload=UNREACHABLE)
    assert both.credentials.startswith("mgmt unknown: forbidden; workload unknown: ")


def test_an_unreadable_service_cluster_is_an_unknown_phase_with_its_reason() -> None:
    error = ConfigError("stored kubeconfig svc/svc-kubeconfig is not valid YAML")
    row = build_row("wl", "svc", error, in_mgmt=True, in_workload=False)
    assert row.phase == "Unknown: stored kubeconfig svc/svc-kubeconfig is not valid YAML"
    assert row.endpoint == ""
    assert row.credentials == "mgmt"
    assert not row.complete


@pytest.mark.parametrize(
    ("labels", "annotations", "listed"),
    [
        ({"postgres": "required"}, {}, True),
        ({}, {SERVICE_CLUSTER_ANNOTATION: "svc"}, True),  # released but still placed (Retain)
        ({"postgres": "optional"}, {}, False),
        ({"type": "services"}, {}, False),
    ],
)
def test_listed_while_asking_for_a_database_or_having_one(
    labels: dict[str, str], annotations: dict[str, str], listed: bool
) -> None:
    assert requests_database(ClusterRecord("wl", labels=labels, annotations=annotations)) is listed
