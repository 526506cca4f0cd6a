"""No secret of the chain is anywhere it should not be.

The platform runs as a user starts it (executor, watcher, webhook API as processes); clusters
are registered with ``fleetflow cluster register`` (the register-cluster flow reads their
kubeconfigs), labels drive install-operator, provision-database and deploy-app, and
fetch-credentials runs from the CLI. Then every delivered password and every stored kubeconfig's
key, certificate and token is looked for in Prefect's database and API (runs, parameters, states,
logs, events, artifacts), its result storage, every process's command line and environment, and
every file under ``$FLEETFLOW_HOME`` and the platform's logs. Only the owner-only state files the
README names may hold them, and they must be owner-only.
"""

from __future__ import annotations

import base64
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect.settings import get_current_settings

from fleetflow.databases.names import APP_NAMESPACE
from fleetflow.kube import KubeClient
from fleetflow.supervisor.processes import free_port
from tests.support.dbaas_support import FLEETFLOW, decoded, psql
from tests.support.eventually import eventually
from tests.support.local_fleet import LocalFleet
from tests.support.platform_support import Platform, running_platform
from tests.support.secret_search import Search, call

pytestmark = [pytest.mark.integration, pytest.mark.security]

SERVICES, APP = "sn-services", "sn-app"
TOKEN = "secrets-test-token-" + "y" * 20
# Owner-only state the README names, relative to $FLEETFLOW_HOME: the fleet's kubeconfig, the
# API token, fleetflow's PostgreSQL for Prefect (data, passwords) and the Prefect server's
# passfile, URL and profile, and each local cluster's keys, etcd data and controller kubeconfig.
OWNER_ONLY = ("fleet/kubeconfig", "api-token", "platform/prefect-db", "platform/prefect-server")
OWNER_ONLY_IN_CLUSTER = ("pki", "etcd", "controller-manager.kubeconfig")

# Results written before this test session (another run's, on a developer's machine) are not ours
# to judge: the search covers those of this session's runs, every module's.
SESSION_STARTED = time.time()


@pytest.fixture(scope="module")
def platform(
    local_fleet: LocalFleet, prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    with running_platform(local_fleet, prefect_api, tmp_path_factory, TOKEN) as p:
        try:
            yield p
        finally:
            local_fleet.client("service-cluster").delete(
                "postgresql.cnpg.io/v1", "Cluster", f"cluster-{APP}", APP
            )
            workload = local_fleet.client("workload-cluster")
            workload.delete("batch/v1", "Job", "todo-table", APP_NAMESPACE)
            workload.delete("v1", "Secret", "pg-credentials", APP_NAMESPACE)
            for name in (APP, SERVICES, "sn-unreachable"):
                p.registry.deregister(name, delete_namespace=True)


def fleetflow(platform: Platform, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [FLEETFLOW, *args], env=platform.env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0 or not check, f"fleetflow {' '.join(args)}: {done.stdout}{done.stderr}"
    with (platform.logs / "cli.log").open("a") as log:  # what a user saw: searched with the logs
        log.write(f"$ fleetflow {' '.join(args)}\n{done.stdout}{done.stderr}")
    return done


def artifacts(api: httpx.Client, key: str) -> list[Any]:
    found: list[Any] = call(api, "POST", "artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}})
    return found


def finished_run(
    api: httpx.Client, flow: str, parameters: dict[str, str], state: str = "COMPLETED"
) -> str | None:
    """The id of a run of FLOW with PARAMETERS (a subset) that ended in STATE, if any."""
    runs = call(
        api,
        "POST",
        "flow_runs/filter",
        json={"flows": {"name": {"any_": [flow]}}, "flow_runs": {"state": {"type": {"any_": [state]}}}},
    )
    return next((r["id"] for r in runs if parameters.items() <= r["parameters"].items()), None)


def recorded(api: httpx.Client, run_id: str, state: str = "Completed") -> bool:
    """The run's final log line and its final event are stored (both arrive in batches)."""
    logs = call(api, "POST", "logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
    events = call(
        api,
        "POST",
        "events/filter",
        json={
            "filter": {
                "event": {"name": [f"prefect.flow-run.{state}"]},
                "resource": {"id": [f"prefect.flow-run.{run_id}"]},
            }
        },
    )
    return any(state in line["message"] for line in logs) and bool(events["events"])


def kubeconfig_material(name: str, secret: dict[str, Any]) -> dict[str, bytes]:
    """The private key, client certificate and token of a stored kubeconfig, decoded."""
    config = yaml.safe_load(decoded(secret)["kubeconfig"])
    found: dict[str, bytes] = {}
    for user in config["users"]:
        fields = user["user"]
        for key in ("client-key-data", "client-certificate-data"):
            if key in fields:
                found[f"{key} of {name}-kubeconfig"] = base64.b64decode(fields[key])
        if "token" in fields:
            found[f"token of {name}-kubeconfig"] = fields["token"].encode()
    return found


def collect(local_fleet: LocalFleet) -> dict[str, bytes]:
    """Every delivered password and every stored kubeconfig's key material."""
    mgmt, service, workload = (local_fleet.client(n) for n in ("mgmt", "service-cluster", "workload-cluster"))
    secrets: dict[str, bytes] = {}
    for obj in mgmt.list("v1", "Secret")[0]:
        meta = obj["metadata"]
        if meta["name"] == "pg-credentials":
            secrets[f"password in mgmt {meta['namespace']}/pg-credentials"] = decoded(obj)[
                "password"
            ].encode()
        elif meta["name"] == f"{meta['namespace']}-kubeconfig":
            secrets.update(kubeconfig_material(meta["namespace"], obj))
    app_secret = decoded(service.get("v1", "Secret", f"cluster-{APP}-app", APP))
    secrets[f"password in service-cluster {APP}/cluster-{APP}-app"] = app_secret["password"].encode()
    delivered = decoded(workload.get("v1", "Secret", "pg-credentials", APP_NAMESPACE))
    secrets[f"password in workload-cluster {APP_NAMESPACE}/pg-credentials"] = delivered["password"].encode()
    return secrets


def owner_only(home: Path, path: Path) -> bool:
    relative = path.relative_to(home)
    parts = relative.parts
    if str(relative).startswith(OWNER_ONLY):
        return True
    return parts[:2] == ("fleet", "clusters") and len(parts) > 3 and parts[3] in OWNER_ONLY_IN_CLUSTER


def not_owner_only(home: Path) -> list[str]:
    """Owner-only state readable by anybody else: each file must be 0600 or under a 0700 directory."""
    loose = []
    for path in home.rglob("*"):
        if not owner_only(home, path):
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        guarded = any(
            stat.S_IMODE(parent.stat().st_mode) & 0o077 == 0
            for parent in path.parents
            if home in parent.parents and owner_only(home, parent)
        )
        if mode & 0o077 and not guarded:
            loose.append(f"{path.relative_to(home)} {oct(mode)}")
    return loose


def prefect_database() -> Path:
    """The test server's SQLite file (the harness sets its URL in this process's settings)."""
    url = get_current_settings().server.database.connection_url
    assert url is not None, "the Prefect test server has no database URL"
    return Path(url.get_secret_value().split("///", 1)[1])


def result_storage(platform: Platform) -> Path:
    """Where the platform's processes persist results (their Prefect setting, not a guess)."""
    code = "from prefect.settings import get_current_settings as s; print(s().results.local_storage_path)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=platform.env, capture_output=True, text=True, timeout=60, check=True
    )
    return Path(done.stdout.strip())


def step(
    platform: Platform, label: str, command: list[str], awaited: tuple[str, Callable[[], Any]] | None = None
) -> Any:
    """Run a fleetflow command, wait for what it should lead to, print how long that took."""
    started = time.monotonic()
    fleetflow(platform, *command)
    result = eventually(awaited[1], awaited[0], timeout=180, detail=platform.tails) if awaited else None
    print(f"{label}: {time.monotonic() - started:.1f} s")
    return result


def run_the_chain(platform: Platform, mgmt: KubeClient, api: httpx.Client, tmp: Path) -> None:
    """register -> install-operator -> provision-database -> fetch-credentials -> deploy-app, then
    a reconcile run and a registration that fails; each step timed."""
    step(
        platform,
        "register service cluster -> operator installed",
        ["cluster", "register", SERVICES, "--context", "service-cluster", "--labels", "type=services"],
        (
            "install-operator for the service cluster",
            lambda: finished_run(api, "install-operator", {"cluster": SERVICES}),
        ),
    )
    step(
        platform,
        "register workload cluster -> credentials in mgmt",
        ["cluster", "register", APP, "--context", "workload-cluster", "--labels", "postgres=required"],
        ("pg-credentials in mgmt", lambda: mgmt.get_or_none("v1", "Secret", "pg-credentials", APP)),
    )
    step(
        platform,
        "fleetflow run fetch-credentials --deliver-to workload",
        ["run", "fetch-credentials", APP, "--deliver-to", "workload"],
    )
    app_run = step(
        platform,
        "label type=app -> deploy-app completed",
        ["cluster", "label", APP, "type=app"],
        ("a completed deploy-app run", lambda: finished_run(api, "deploy-app", {"cluster": APP})),
    )
    eventually(
        lambda: recorded(api, app_run),
        "the deploy-app run's logs and events stored",
        120,
        detail=platform.tails,
    )

    # reconcile writes its table artifact; a registration that fails logs and records its error.
    started = time.monotonic()
    deployment = call(api, "GET", "deployments/name/reconcile/fleetflow")["id"]
    call(api, "POST", f"deployments/{deployment}/create_flow_run", json={})
    eventually(
        lambda: artifacts(api, "reconcile-outcome"),
        "the reconcile-outcome artifact",
        timeout=180,
        detail=platform.tails,
    )
    print(f"reconcile run -> its artifact: {time.monotonic() - started:.1f} s")
    reconciled = eventually(
        lambda: finished_run(api, "reconcile", {}),
        "a completed reconcile run",
        timeout=180,
        detail=platform.tails,
    )
    eventually(
        lambda: recorded(api, reconciled),
        "the reconcile run's logs and events stored",
        120,
        detail=platform.tails,
    )
    unreachable = tmp / "unreachable.kubeconfig"
    config = yaml.safe_load(Path(platform.env["KUBECONFIG"]).read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    unreachable.write_text(yaml.safe_dump(config))
    unreachable.chmod(0o600)
    failed = fleetflow(
        platform,
        "cluster",
        "register",
        "sn-unreachable",
        "--context",
        "workload-cluster",
        "--kubeconfig",
        str(unreachable),
        "--probe-retries",
        "0",
        check=False,
    )
    assert failed.returncode != 0, "registering through an unreachable server must fail"
    assert "cannot be reached" in failed.stderr, failed.stderr
    failed_run = finished_run(api, "register-cluster", {"name": "sn-unreachable"}, "FAILED")
    assert failed_run, "the failed registration must show as a Failed run"
    eventually(
        lambda: recorded(api, failed_run, "Failed"),
        "the failed run's logs and events stored",
        120,
        detail=platform.tails,
    )
    for command in (["show", "databases"], ["show", "addons"], ["cluster", "list"], ["status"]):
        fleetflow(platform, *command)


def test_no_secret_of_the_chain_is_anywhere(
    platform: Platform, local_fleet: LocalFleet, prefect_api: str, tmp_path: Path
) -> None:
    mgmt = local_fleet.client("mgmt")
    with httpx.Client(base_url=prefect_api.rstrip("/") + "/", timeout=60) as api:
        run_the_chain(platform, mgmt, api, tmp_path)

    secrets = collect(local_fleet)
    address = mgmt.get("v1", "ConfigMap", "pg-loadbalancer-data", APP)["data"]
    user = decoded(mgmt.get("v1", "Secret", "pg-credentials", APP))["user"]
    password = secrets[f"password in mgmt {APP}/pg-credentials"].decode()
    opened = psql(
        address["external-ip"], address["port"], user, password, address["dbname"], "-c", "select 1"
    )
    assert opened.returncode == 0, f"the delivered credentials must be real: {opened.stderr}"
    assert {f"client-key-data of {n}-kubeconfig" for n in (SERVICES, APP)} <= set(secrets), sorted(secrets)

    started = time.monotonic()
    search = Search(secrets)
    search.sqlite(prefect_database())
    search.prefect_api(prefect_api)
    storage = result_storage(platform)
    if storage.exists():  # Prefect's default is the user's ~/.prefect/storage, shared by every run
        search.files(storage, skip=lambda path: path.stat().st_mtime < SESSION_STARTED)
    search.proc()
    home = local_fleet.home
    search.files(home, skip=lambda path: owner_only(home, path))
    search.files(platform.logs)
    elapsed = time.monotonic() - started
    print(
        f"searched for {len(secrets)} secrets in {elapsed:.1f} s: "
        + ", ".join(f"{n} {k}" for k, n in search.searched.items())
    )

    nothing = [
        w for w in ("Prefect database rows", "API events", "API logs", "processes") if not search.searched[w]
    ]
    assert not nothing, f"the search found nothing to search in: {nothing}"
    assert not search.found, f"secrets found where they must not be:\n{search.report()}"
    assert not not_owner_only(home), f"owner-only state readable by others: {not_owner_only(home)}"
