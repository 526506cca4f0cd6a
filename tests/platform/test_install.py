"""A plain (non-editable) ``pip install .`` works away from the source tree and adds only ``fleetflow*``.

fleetflow once found its templates relative to the source checkout, so only an editable install
worked. This builds and installs the project into a fresh virtual environment (its dependencies come
from this environment's site-packages through a ``.pth`` line; only the build backend is fetched), then,
from a directory outside the checkout, renders every default template and runs the commands.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_a_non_editable_install_renders_templates_and_runs_outside_the_tree(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path)
    # The dependencies, not fleetflow: this environment's editable finder is a .pth *file*, and a
    # directory named by a .pth line is added without running the .pth files inside it.
    (Path(purelib.strip()) / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    site = Path(purelib.strip())
    before = set(os.listdir(site))
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet"]
    _run([*pip, str(ROOT)], tmp_path)
    added = set(os.listdir(site)) - before
    names = {n for n in added if not n.endswith((".dist-info", ".pth")) and n != "__pycache__"}
    assert names == {"fleetflow"}, f"the product installs top-level names besides fleetflow: {sorted(names)}"
    [dist] = [n for n in added if n.endswith(".dist-info")]
    requires = (site / dist / "METADATA").read_text()
    assert "Requires-Dist: cryptography" not in requires, "the product pulls the dev fleet's PKI dependency"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PREFECT_", "VIRTUAL_ENV"))}
    env["FLEETFLOW_HOME"] = str(tmp_path / "home")

    where = _run([str(python), "-c", "import fleetflow.cli.main as m; print(m.__file__)"], elsewhere, env)
    assert str(ROOT) not in where, f"imported from the source tree, not the install: {where}"
    rendered = _run(
        [
            str(python),
            "-c",
            "from fleetflow.templating import DEFAULT_TEMPLATE_DIR, render\n"
            "print(DEFAULT_TEMPLATE_DIR)\n"
            "[c] = render('cnpg-cluster.yaml.j2', {'cluster': 'workload-cluster'})\n"
            "print(c['kind'], c['metadata']['name'])",
        ],
        elsewhere,
        env,
    )
    assert str(ROOT) not in rendered.splitlines()[0]
    assert rendered.splitlines()[1] == "Cluster cluster-workload-cluster", rendered
    assert "usage: fleetflow" in _run([str(venv / "bin" / "fleetflow"), "--help"], elsewhere, env)
    # The local development fleet is its own distribution, installed beside the product.
    _run([*pip, str(ROOT / "dev")], tmp_path)
    dev_names = {n for n in set(os.listdir(site)) - before if not n.endswith((".dist-info", ".pth"))}
    assert dev_names - {"__pycache__"} == {"fleetflow", "fleetflow_dev"}, sorted(dev_names)
    show_chart = "from fleetflow_dev.cnpg import CHART_SOURCE; print(CHART_SOURCE)"
    chart = _run([str(python), "-c", show_chart], elsewhere, env)
    assert (Path(chart.strip()) / "Chart.yaml").is_file(), "the stand-in chart is not package data"
    assert "bootstrap" in _run([str(venv / "bin" / "fleetflow"), "fleet", "--help"], elsewhere, env)
