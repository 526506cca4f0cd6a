"""The fleetflow command as a script uses it, on the local fleet: ``-o json`` of clusters and
Database requests parses and holds the objects, ``--kubeconfig``/``--context`` are all a command
needs, a missing object exits 1 with one line naming it, and Prefect's run logs stay off the
terminal unless ``-v``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fleetflow.kube import Kubeconfig
from tests.support.local_fleet import LocalFleet
from tests.support.requests_support import ns

pytestmark = pytest.mark.integration

FLEETFLOW = str(Path(sys.executable).parent / "fleetflow")
RUN_LOG_LINES = ("Beginning flow run", "Finished in state", "Created task run")


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLEETFLOW, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def registered(registry_env: dict[str, str]) -> dict[str, subprocess.CompletedProcess[str]]:
    """The management cluster and the two others registered through the CLI (the workload cluster's
    labels, which other modules set, are kept); each registration's output, by cluster."""
    done = {"mgmt": cli(registry_env, "init", "--context", "mgmt")}
    done["service-cluster"] = cli(
        registry_env,
        "cluster",
        "register",
        "service-cluster",
        "--context",
        "service-cluster",
        "--labels",
        "type=services",
    )
    done["workload-cluster"] = cli(
        registry_env, "-v", "cluster", "register", "workload-cluster", "--context", "workload-cluster"
    )
    for name, proc in done.items():
        assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"
    return done


@pytest.fixture
def flags_only(
    registry_env: dict[str, str], local_fleet: LocalFleet, tmp_path: Path
) -> tuple[dict[str, str], list[str]]:
    """An environment that names no kubeconfig and no management cluster (an empty home), and the
    flags that do."""
    env = {k: v for k, v in registry_env.items() if k not in ("KUBECONFIG", "FLEETFLOW_MGMT_CONTEXT")}
    env["FLEETFLOW_HOME"] = str(tmp_path)
    return env, ["--kubeconfig", str(local_fleet.kubeconfig), "--context", "mgmt"]


def test_run_logs_stay_in_prefect_unless_verbose(
    registered: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    quiet = registered["service-cluster"]
    assert quiet.stdout.startswith("cluster/service-cluster registered (ready=true"), quiet.stdout
    assert not [line for line in quiet.stderr.splitlines() if any(s in line for s in RUN_LOG_LINES)], (
        quiet.stderr
    )
    verbose = registered["workload-cluster"]
    assert "Finished in state Completed" in verbose.stderr, "-v does not show the run logs"


def test_cluster_list_and_get_as_json_and_yaml_are_the_registered_clusters(
    registered: dict[str, subprocess.CompletedProcess[str]],
    flags_only: tuple[dict[str, str], list[str]],
    local_fleet: LocalFleet,
) -> None:
    env, flags = flags_only
    listed = cli(env, "cluster", "list", "-o", "json", *flags)
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert found["kind"] == "List"
    by_name = {c["name"]: c for c in found["items"]}
    assert {"mgmt", "service-cluster", "workload-cluster"} <= set(by_name)
    service = by_name["service-cluster"]
    kubeconfig = Kubeconfig.from_file(local_fleet.kubeconfig, "service-cluster")
    assert (service["namespace"], service["labels"], service["ready"]) == (
        "service-cluster",
        {"type": "services"},
        True,
    )
    assert service["server"] == kubeconfig.server
    assert service["version"].startswith("v1.")
    [ready] = service["conditions"]
    assert (ready["type"], ready["status"]) == ("Ready", "True")
    user = kubeconfig.data["users"][0]["user"]
    for secret in (user.get("client-key-data"), user.get("token"), user.get("client-certificate-data")):
        assert not secret or secret not in listed.stdout, "a credential of the cluster is in the output"

    got = cli(env, "cluster", "get", "service-cluster", "-o", "yaml", *flags)
    assert got.returncode == 0, got.stderr
    assert yaml.safe_load(got.stdout) == service

    wide = cli(env, "cluster", "list", "-o", "wide", "-l", "type=services", *flags).stdout.splitlines()
    assert wide[0].split()[:6] == ["NAMESPACE", "NAME", "READY", "VERSION", "LABELS", "SERVER"]
    row = next(line.split() for line in wide[1:] if line.split()[1] == "service-cluster")
    assert row[5] == kubeconfig.server

    unflagged = cli(env, "cluster", "list")
    assert unflagged.returncode == 1, "without the flags (or their variables) no management cluster is known"
    assert "no management cluster configured" in unflagged.stderr


def test_db_list_and_get_as_json_hold_the_request_and_a_missing_one_exits_1(
    registered: dict[str, subprocess.CompletedProcess[str]],
    flags_only: tuple[dict[str, str], list[str]],
    request: pytest.FixtureRequest,
) -> None:
    env, flags = flags_only
    namespace = ns(request, "cli")
    ref = f"workload-cluster/{namespace}/orders"
    made = cli(env, "db", "create", ref, "--instances", "2", "--deletion-policy", "Delete", *flags)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("database.fleetflow.io/orders configured"), made.stdout

    listed = cli(env, "db", "list", "-o", "json", *flags)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    items = json.loads(listed.stdout)["items"]
    [orders] = [i for i in items if (i["cluster"], i["namespace"], i["name"]) == tuple(ref.split("/"))]
    assert orders["kind"] == "Database"
    assert (orders["instances"], orders["deletionPolicy"], orders["secretName"]) == (
        2,
        "Delete",
        "orders-credentials",
    )
    assert orders["ready"] is False  # nothing serves requests in this module: it stays pending
    assert orders["phase"] == "Pending"

    got = cli(env, "db", "get", ref, "-o", "json", *flags)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == orders
    as_yaml = cli(env, "db", "get", ref, "-o", "yaml", *flags)
    assert yaml.safe_load(as_yaml.stdout) == orders

    missing = f"workload-cluster/{namespace}/missing"
    for verb in ("get", "delete"):
        proc = cli(env, "db", verb, missing, *flags)
        assert proc.returncode == 1, f"db {verb} of a missing request: {proc.stdout}{proc.stderr}"
        assert proc.stdout == ""
        assert len(proc.stderr.splitlines()) == 1
        assert proc.stderr.startswith("error: ")
        assert missing in proc.stderr
    gone = cli(env, "cluster", "get", "no-such-cluster", *flags)
    assert gone.returncode == 1
    assert gone.stderr.strip() == "error: cluster 'no-such-cluster' is not registered"

    deleted = cli(env, "db", "delete", ref, *flags)
    assert deleted.returncode == 0, deleted.stderr
    after = cli(env, "db", "get", ref, *flags)
    assert after.returncode == 1, "a request without fleetflow's finalizer is gone at once"
