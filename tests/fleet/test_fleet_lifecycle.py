"""``fleetflow fleet up/status/down`` as a user runs them: idempotent, self-healing, tidy."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fleetflow.kube import client_for

pytestmark = pytest.mark.integration

FLEETFLOW = str(Path(sys.executable).parent / "fleetflow")


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FLEETFLOW_HOME=str(home))
    return subprocess.run(
        [FLEETFLOW, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def status_of(home: Path, cluster: str) -> list[str]:
    proc = run(home, "fleet", "status")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    return next(r for r in rows if r[0] == cluster)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A fleet home whose processes are stopped after the test, whatever happened in it."""
    path = tmp_path / "home"
    yield path
    run(path, "fleet", "down")


def test_up_is_idempotent_recovers_stale_state_and_down_keeps_data(home: Path, assets: object) -> None:
    first = run(home, "fleet", "up", "--clusters", "lifecycle")
    assert first.returncode == 0, first.stderr
    kubeconfig = Path(first.stdout.strip())
    assert kubeconfig == home / "fleet" / "kubeconfig"
    row = status_of(home, "lifecycle")
    assert row[1] == "Running"
    endpoint = row[2]
    # A fleet of any names tells the product where its helm and stand-in chart are.
    settings = yaml.safe_load((home / "config.yaml").read_text())
    assert (Path(settings["operatorChart"]) / "Chart.yaml").is_file()
    assert Path(settings["helm"]).is_file()
    chart = subprocess.run(
        [sys.executable, "-c", "from fleetflow.cli.run import _chart; print(_chart(True))"],
        env=dict(os.environ, FLEETFLOW_HOME=str(home)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert settings["operatorChart"] in chart.stdout, chart.stderr

    again = run(home, "fleet", "up", "--clusters", "lifecycle")
    assert again.returncode == 0, again.stderr
    assert "lifecycle: already running" in again.stderr
    assert status_of(home, "lifecycle")[2] == endpoint

    client_for("lifecycle", kubeconfig).apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "survivor", "namespace": "default"},
            "data": {"k": "v"},
        }
    )

    # Crash the API server and take its port: `up` must notice, say so, and recover.
    state = json.loads((home / "fleet" / "state.json").read_text())["clusters"]["lifecycle"]
    os.kill(state["pids"]["kube-apiserver"], signal.SIGKILL)
    degraded = status_of(home, "lifecycle")
    assert degraded[1] == "Degraded"
    assert "kube-apiserver" in " ".join(degraded[3:])
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", state["api_port"]))
        squatter.listen()
        healed = run(home, "fleet", "up", "--clusters", "lifecycle")
    assert healed.returncode == 0, healed.stderr
    assert "recovering stale state (kube-apiserver not running)" in healed.stderr
    assert f"port {state['api_port']} is taken" in healed.stderr
    row = status_of(home, "lifecycle")
    assert row[1] == "Running"
    assert row[2] != endpoint
    survivor = client_for("lifecycle", kubeconfig).get("v1", "ConfigMap", "survivor", "default")
    assert survivor["data"] == {"k": "v"}, "etcd data must survive a restart"

    down = run(home, "fleet", "down")
    assert down.returncode == 0, down.stderr
    assert status_of(home, "lifecycle")[1] == "Stopped"
    pids = json.loads((home / "fleet" / "state.json").read_text())["clusters"]["lifecycle"]["pids"]
    assert pids == {}
    for pid in state["pids"].values():
        assert (
            not Path(f"/proc/{pid}").exists() or b"lifecycle" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
    assert kubeconfig.exists(), "down removes nothing but processes"
    assert "operatorChart" not in yaml.safe_load((home / "config.yaml").read_text()), (
        "a stopped fleet must not keep steering installs to its stand-in chart"
    )
    assert any((home / "fleet" / "clusters" / "lifecycle" / "etcd").iterdir())


def test_bad_cluster_name_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = run(home, "fleet", "up", "--clusters", "mgmt,Bad_Name")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "invalid cluster name 'Bad_Name'" in proc.stderr
    assert not home.exists()


def test_status_of_an_empty_home_says_how_to_start(tmp_path: Path) -> None:
    proc = run(tmp_path / "home", "fleet", "status")
    assert proc.returncode == 0
    assert "fleetflow fleet up" in proc.stdout
