"""GitOps: a directory of plain YAML, applied as Flux would, drives the whole chain.

The management side (Namespaces, kubeconfig Secrets, FleetCluster objects) and a team's
Database objects are written to files and server-side applied with the field manager of Flux's
kustomize-controller; nothing else is done by hand. The platform's processes run as a user
starts them. Along the way the watcher is stopped and started (a request made while it is down
is not lost) and a Database is deleted while fleetflow is down (it is processed once it is up).
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetflow.databases import crd
from fleetflow.databases.spec import RequestRef, cnpg_name
from fleetflow.errors import FleetflowError
from fleetflow.kube import KubeClient, Kubeconfig
from fleetflow.registry import API_VERSION as FLEET_API
from tests.support.eventually import eventually
from tests.support.local_fleet import LocalFleet
from tests.support.platform_support import Platform, running_platform

pytestmark = pytest.mark.integration
TOKEN = "gitops-token-" + "y" * 20
FLUX = "kustomize-controller"
# Other modules leave registrations of the same local clusters behind; the request watcher serves
# one name per API server, the first that works: these names sort first.
APP, SERVICES = "a-gitops-app", "a-gitops-services"
CNPG = "postgresql.cnpg.io/v1"


def apply_dir(client: KubeClient, directory: Path) -> None:
    """``kubectl apply -f DIR`` as Flux does it: every document, server-side, Flux's manager."""
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                client.apply(doc, field_manager=FLUX)


def cluster_yaml(name: str, kubeconfig: Kubeconfig, labels: dict[str, str]) -> str:
    secret = base64.b64encode(kubeconfig.to_yaml().encode()).decode()
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-kubeconfig", "namespace": name},
            "data": {"kubeconfig": secret},
        },
        {
            "apiVersion": FLEET_API,
            "kind": "FleetCluster",
            "metadata": {"name": name, "namespace": name, "labels": labels},
            "spec": {"kubeconfigSecretRef": {"name": f"{name}-kubeconfig", "key": "kubeconfig"}},
        },
    ]
    return yaml.safe_dump_all(docs)


def database_yaml(namespace: str, name: str, **spec: Any) -> str:
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": crd.API_VERSION,
            "kind": crd.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        },
    ]
    return yaml.safe_dump_all(docs)


@pytest.fixture(scope="module")
def platform(
    local_fleet: LocalFleet, prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    with running_platform(local_fleet, prefect_api, tmp_path_factory, TOKEN) as p:
        yield p


def ready(client: KubeClient, ref: RequestRef) -> dict[str, Any] | None:
    obj = client.get_or_none(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return obj if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None


def psql_select(client: KubeClient, ref: RequestRef, secret: str) -> subprocess.CompletedProcess[str]:
    data = client.get("v1", "Secret", secret, ref.namespace)["data"]
    creds = {k: base64.b64decode(v).decode() for k, v in data.items()}
    return subprocess.run(
        ["/usr/bin/psql", creds["uri"], "--no-password", "--tuples-only", "--command=select 42"],
        env={"PATH": os.environ["PATH"], "PGCONNECT_TIMEOUT": "10"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_directory_of_yaml_drives_the_chain_and_nothing_is_lost(
    platform: Platform, local_fleet: LocalFleet, tmp_path: Path
) -> None:
    kubeconfig = Path(platform.env["KUBECONFIG"])
    mgmt_dir, team_dir = tmp_path / "fleet", tmp_path / "team"
    mgmt_dir.mkdir()
    team_dir.mkdir()
    (mgmt_dir / "g-services.yaml").write_text(
        cluster_yaml(SERVICES, Kubeconfig.from_file(kubeconfig, "service-cluster"), {"type": "services"})
    )
    (mgmt_dir / "g-app.yaml").write_text(
        cluster_yaml(APP, Kubeconfig.from_file(kubeconfig, "workload-cluster"), {})
    )
    mgmt, workload = local_fleet.client("mgmt"), local_fleet.client("workload-cluster")
    service = local_fleet.client("service-cluster")
    namespace = f"team-g-{os.getpid()}"
    orders, reports = RequestRef(APP, namespace, "orders"), RequestRef(APP, namespace, "reports")
    try:
        apply_dir(mgmt, mgmt_dir)
        eventually(
            lambda: workload.get_or_none("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd.CRD_NAME),
            "the Database CRD in the workload cluster (fleetflow installs it on registration)",
            timeout=180,
            detail=platform.tails,
        )
        (team_dir / "orders.yaml").write_text(database_yaml(namespace, "orders", deletionPolicy="Delete"))
        apply_dir(workload, team_dir)
        started = time.monotonic()
        obj = eventually(
            lambda: ready(workload, orders), f"Database {orders} Ready", 240, detail=platform.tails
        )
        print(f"Database applied -> Ready: {time.monotonic() - started:.1f}s")
        assert obj["status"]["serviceCluster"] == SERVICES or obj["status"]["serviceCluster"]
        done = psql_select(workload, orders, "orders-credentials")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "42"
        assert mgmt.get_or_none("v1", "Secret", "orders-credentials", namespace) is None

        # A request applied while the watcher is down is served once it is back.
        platform.stop("watch")
        (team_dir / "reports.yaml").write_text(database_yaml(namespace, "reports", instances=2))
        apply_dir(workload, team_dir)
        platform.start("watch")
        eventually(
            lambda: ready(workload, reports),
            f"Database {reports} Ready after the watcher restarted",
            timeout=180,
            detail=platform.tails,
        )

        # Pruned from Git while fleetflow is down: processed (Delete policy) once it is up.
        platform.stop("watch")
        platform.stop("executor")
        (team_dir / "orders.yaml").unlink()
        workload.delete(crd.API_VERSION, crd.KIND, "orders", namespace)  # what Flux's prune does
        assert workload.get(crd.API_VERSION, crd.KIND, "orders", namespace)["metadata"]["deletionTimestamp"]
        platform.start("executor")
        platform.start("watch")
        eventually(
            lambda: workload.get_or_none(crd.API_VERSION, crd.KIND, "orders", namespace) is None,
            "the pruned Database to be finalised",
            timeout=180,
            detail=platform.tails,
        )
        eventually(
            lambda: service.get_or_none(CNPG, "Cluster", cnpg_name(orders), APP) is None,
            "its CNPG Cluster to be deleted (deletionPolicy Delete)",
            timeout=180,
            detail=platform.tails,
        )
        assert workload.get_or_none("v1", "Secret", "orders-credentials", namespace) is None
        clusters, _ = service.list(CNPG, "Cluster", APP)
        assert [c["metadata"]["name"] for c in clusters] == [cnpg_name(reports)], (
            "one CNPG Cluster per request"
        )
    finally:
        for ref in (orders, reports):
            with contextlib.suppress(FleetflowError):  # cleanup must not hide the test's failure
                gone = {"metadata": {"finalizers": None}}
                workload.merge_patch(crd.API_VERSION, crd.KIND, ref.name, ref.namespace, gone)
            with contextlib.suppress(FleetflowError):
                service.delete(CNPG, "Cluster", cnpg_name(ref), APP)
        with contextlib.suppress(FleetflowError):
            workload.delete("v1", "Namespace", namespace)
        for name in (SERVICES, APP):
            platform.registry.deregister(name, delete_namespace=True)
