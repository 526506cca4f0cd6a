"""The node controllers against a real local-fleet API server (no node is needed for either).

Volumes: the provisioner makes a hostPath PersistentVolume for a claim, kube-controller-manager's
PV controller binds the two, and deleting the claim releases the volume, which the provisioner
removes with its directory. Addresses: LoadBalancer Services get distinct addresses of the
cluster's pool, and a freed one is handed out again. The controllers run on a fleet of their own
(one cluster), so that they touch no other test's Services; the process entry point is started
as ``fleet up --nodes`` starts it, and stopped with SIGTERM.
"""

from __future__ import annotations

import ipaddress
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleetflow_dev import binaries
from fleetflow_dev.nodes import controllers, storage
from fleetflow_dev.nodes.addresses import NodeAddresses

from fleetflow.kube import KubeClient
from tests.support.cnpg_standin_support import SERVICE_CLUSTER, fresh_namespace, private_fleet
from tests.support.local_fleet import LocalFleet

pytestmark = pytest.mark.integration

INDEX = 7  # the cluster's node index: its LoadBalancer pool is 172.31.7.0/24
POOL = NodeAddresses(INDEX).loadbalancer_pool()
WAIT = 60.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, assets: binaries.Binaries) -> Iterator[LocalFleet]:
    with private_fleet(tmp_path_factory.mktemp("node-controllers"), assets) as private:
        yield private


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nodes")


@pytest.fixture(scope="module")
def running(fleet: LocalFleet, root: Path) -> Iterator[None]:
    """The controllers of service-cluster, in a thread, serving once they say so."""
    stop = threading.Event()
    said: queue.Queue[str] = queue.Queue()
    thread = threading.Thread(
        target=controllers.run,
        args=(fleet.kubeconfig, {SERVICE_CLUSTER: INDEX}, root, stop),
        kwargs={"announce": said.put, "watch_timeout": 2},
        name="node-controllers-test",
    )
    thread.start()
    try:
        assert said.get(timeout=WAIT) == controllers.SERVING, "the controllers never said they serve"
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the node controllers did not stop within 30s of the stop event"


@pytest.fixture
def namespace(fleet: LocalFleet, request: pytest.FixtureRequest) -> Iterator[str]:
    with fresh_namespace(fleet, request.node.name) as name:
        yield name


def ingress(obj: dict[str, Any] | None) -> str | None:
    items = (((obj or {}).get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return str(items[0]["ip"]) if items else None


def lb_service(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"created-by": "fleetflow-tests"}},
        "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 5432}]},
    }


def wait_address(client: KubeClient, name: str, namespace: str) -> str:
    obj = client.wait(
        "v1",
        "Service",
        name,
        namespace,
        lambda o: ingress(o) is not None,
        timeout=WAIT,
        awaiting=f"LoadBalancer {namespace}/{name} to get an address of the pool",
    )
    address = ingress(obj)
    assert address is not None
    return address


def test_a_claim_gets_a_volume_of_ours_and_its_deletion_removes_it(
    fleet: LocalFleet, running: None, root: Path, namespace: str
) -> None:
    client = fleet.client(SERVICE_CLUSTER)
    default = client.get("storage.k8s.io/v1", "StorageClass", storage.STORAGE_CLASS)
    assert default["metadata"]["annotations"][storage.DEFAULT_CLASS] == "true"
    claim = client.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": namespace, "labels": {"created-by": "fleetflow-tests"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
        }
    )
    assert claim["spec"]["storageClassName"] == "local-path"  # the default, filled in by admission
    uid = claim["metadata"]["uid"]
    bound = client.wait(
        "v1",
        "PersistentVolumeClaim",
        "data",
        namespace,
        lambda o: ((o or {}).get("status") or {}).get("phase") == "Bound",
        timeout=WAIT,
        awaiting=f"PVC {namespace}/data to be Bound by kube-controller-manager",
    )
    assert bound is not None
    assert bound["spec"]["volumeName"] == f"pvc-{uid}"
    assert bound["status"]["capacity"] == {"storage": "2Gi"}
    pv = client.get("v1", "PersistentVolume", f"pvc-{uid}")
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == storage.PROVISIONER
    directory = Path(pv["spec"]["hostPath"]["path"])
    assert directory == root / SERVICE_CLUSTER / "volumes" / f"{namespace}-data-{uid}"
    assert directory.is_dir()
    assert directory.stat().st_mode & 0o777 == 0o777
    (directory / "PG_VERSION").write_text("15\n")  # data that must go with the volume

    client.delete("v1", "PersistentVolumeClaim", "data", namespace)
    client.wait(
        "v1",
        "PersistentVolume",
        f"pvc-{uid}",
        None,
        lambda o: o is None,
        timeout=WAIT,
        awaiting=f"volume pvc-{uid} to be deleted once its claim was",
    )
    assert not directory.exists(), "the released volume's directory is still there"


def test_loadbalancers_get_distinct_addresses_and_a_freed_one_is_reused(
    fleet: LocalFleet, running: None, namespace: str
) -> None:
    client = fleet.client(SERVICE_CLUSTER)
    for name in ("first", "second"):
        client.apply(lb_service(name, namespace))
    first, second = wait_address(client, "first", namespace), wait_address(client, "second", namespace)
    assert first != second
    assert {first, second} <= set(POOL)
    lower, kept = sorted((first, second), key=ipaddress.ip_address)
    freed_name = "first" if first == lower else "second"

    client.delete("v1", "Service", freed_name, namespace)
    client.wait(
        "v1",
        "Service",
        freed_name,
        namespace,
        lambda o: o is None,
        timeout=WAIT,
        awaiting=f"Service {namespace}/{freed_name} to be deleted",
    )
    client.apply(lb_service("third", namespace))
    assert wait_address(client, "third", namespace) == lower  # the lowest free address: the freed one

    # A Service changed away from LoadBalancer frees its address too.
    kept_name = "second" if freed_name == "first" else "first"
    client.merge_patch("v1", "Service", kept_name, namespace, {"spec": {"type": "ClusterIP"}})
    client.wait(
        "v1",
        "Service",
        kept_name,
        namespace,
        lambda o: ingress(o) is None,
        timeout=WAIT,
        awaiting=f"Service {namespace}/{kept_name}, now a ClusterIP, to lose its address {kept}",
    )
    client.apply(lb_service("fourth", namespace))
    assert wait_address(client, "fourth", namespace) == kept


def test_the_process_serves_and_stops_on_sigterm(fleet: LocalFleet, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "fleetflow_dev.nodes.controllers", "--kubeconfig", str(fleet.kubeconfig)]
    argv += ["--clusters", f"{SERVICE_CLUSTER}:{INDEX}", "--root", str(tmp_path / "nodes")]
    log = (tmp_path / "controllers.log").open("w")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        assert lines.get(timeout=WAIT).strip() == controllers.SERVING
        proc.terminate()
        assert proc.wait(timeout=40) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        log.close()
    assert "SIGTERM received; stopping" in (tmp_path / "controllers.log").read_text()
