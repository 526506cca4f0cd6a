"""``fleetflow fleet`` with nodes: bad input is refused in one line, before anything is started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fleetflow_dev.manager import Fleet
from fleetflow_dev.state import ClusterRecord, FleetState

from fleetflow.errors import UsageError


def _fleet(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetflow_dev.cli", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"FLEETFLOW_HOME": str(home), "PATH": "/usr/bin:/bin"},
    )


def test_the_real_operator_without_nodes_is_refused(tmp_path: Path) -> None:
    proc = _fleet("up", "--cnpg", "real", "--assets", str(tmp_path), home=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "--cnpg real needs --nodes" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "fleet" / "state.json").exists()


def test_load_image_of_a_missing_file_names_it(tmp_path: Path) -> None:
    proc = _fleet("load-image", str(tmp_path / "nope.tar"), home=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope.tar'}: no such file"


def test_load_image_without_a_running_node_says_how_to_start_one(tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    archive.write_bytes(b"")
    with pytest.raises(UsageError, match="fleet up --nodes"):
        Fleet(tmp_path).load_image(archive, print)


def test_a_cluster_created_without_a_node_is_not_given_one(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    state = FleetState({"old": ClusterRecord("old", api_port=6443)})
    with pytest.raises(UsageError, match=r"created without a node.*FLEETFLOW_HOME"):
        fleet._assign_node_indexes(state, [state.clusters["old"]])
    assert state.clusters["old"].node_index == 0


def test_new_clusters_get_distinct_free_node_indexes(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    state = FleetState(
        {"a": ClusterRecord("a", node_index=1), "b": ClusterRecord("b"), "c": ClusterRecord("c")}
    )
    fleet._assign_node_indexes(state, list(state.clusters.values()))
    indexes = [r.node_index for r in state.clusters.values()]
    assert len(set(indexes)) == 3
    assert indexes[0] == 1
    assert all(i >= 1 for i in indexes)
    assert state.clusters["b"].server.startswith(f"https://172.30.{state.clusters['b'].node_index}.1:")
