"""``fleetflow fleet load-image``: an OCI archive of the user's reaches every node and runs there.

No registry is reachable from the local fleet's nodes, so an image of one's own (fleetflow's,
in the next issues) gets there by import. The archive here is the fleet's pause image under a
name no node has yet; a pod that uses it with ``imagePullPolicy: Never`` runs only if the import
put it into the node's containerd under that name.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from fleetflow_dev.images import PAUSE, ensure_images
from fleetflow_dev.nodes.config import NodePaths

from tests.support.e2e_seed import FLEETFLOW, TEST_LABEL, WORKLOAD, Seed

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
NAME = "docker.io/fleetflow-tests/loaded:1"


def _renamed(source: Path, target: Path, name: str) -> None:
    """A copy of an OCI archive whose only image is named ``name``."""
    with tarfile.open(source) as src, tarfile.open(target, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member) if member.isfile() else None
            if member.name.lstrip("./") == "index.json" and data is not None:
                index = json.loads(data.read())
                for manifest in index["manifests"]:
                    manifest["annotations"] = {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": "1",
                    }
                body = json.dumps(index).encode()
                member.size = len(body)
                dst.addfile(member, io.BytesIO(body))
            else:
                dst.addfile(member, data)


def test_an_archive_is_imported_into_every_node_and_a_pod_runs_it(seed: Seed, tmp_path: Path) -> None:
    seed.require_up()
    archive = tmp_path / "loaded.tar"
    _renamed(ensure_images(references=[PAUSE])[PAUSE], archive, NAME)

    proc = subprocess.run(
        [FLEETFLOW, "fleet", "load-image", str(archive)],
        env=seed.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for cluster in seed.node_indexes:
        assert f"{cluster}: imported {NAME}" in proc.stderr + proc.stdout
        socket = NodePaths(seed.home / "fleet" / "clusters" / cluster / "node").containerd_socket
        listed = subprocess.run(
            ["ctr", "--address", str(socket), "--namespace", "k8s.io", "images", "list", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
        assert NAME in listed, f"{NAME} is not in {cluster}'s containerd: {listed}"

    workload = seed.client(WORKLOAD)
    namespace = "e2e-load-image"
    workload.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": TEST_LABEL}}
    )
    try:
        workload.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "loaded", "namespace": namespace},
                "spec": {"containers": [{"name": "loaded", "image": NAME, "imagePullPolicy": "Never"}]},
            }
        )
        workload.wait(
            "v1",
            "Pod",
            "loaded",
            namespace,
            lambda pod: ((pod or {}).get("status") or {}).get("phase") == "Running",
            timeout=120,
            awaiting=f"a pod of the imported image {NAME} to run on {WORKLOAD}'s node",
        )
    finally:
        workload.delete("v1", "Namespace", namespace)
