"""The layers of the guide hold: flows -> tasks -> fleetflow, and only fleetflow.kube imports kubernetes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "lint-imports (import-linter) is not installed next to this Python"
    proc = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_public_error_names_are_pinned() -> None:
    import fleetflow.errors as errors

    public = sorted(n for n, v in vars(errors).items() if isinstance(v, type) and not n.startswith("_"))
    assert public == sorted(
        [
            "FleetflowError",
            "UsageError",
            "ConfigError",
            "BootstrapError",
            "FleetError",
            "APIError",
            "PermanentError",
            "TemporaryError",
            "APINotFoundError",
            "APIForbiddenError",
            "APIInvalidError",
            "APIConflictError",
            "APIGoneError",
            "APIUnavailableError",
            "ApplyConflictError",
            "CommandTimeoutError",
        ]
    )
    assert issubclass(errors.APIConflictError, errors.TemporaryError)
    assert issubclass(errors.APIInvalidError, errors.PermanentError)
    assert issubclass(errors.ApplyConflictError, errors.PermanentError)  # retrying cannot resolve it
    assert issubclass(errors.CommandTimeoutError, errors.TemporaryError)


def test_kube_public_names_are_pinned() -> None:
    import fleetflow.kube as kube

    assert sorted(kube.__all__) == [
        "KubeClient",
        "Kubeconfig",
        "WaitTimeoutError",
        "client_for",
        "client_from_config",
        "contexts",
        "extract_kubeconfig",
        "forget_clients",
        "probe",
    ]


PRODUCT = ("fleetflow",)


def test_every_contract_of_the_house_is_declared_and_kept() -> None:
    """Deleting a contract must fail a test, not pass silently."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint
    out = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False).stdout
    out = " ".join(out.split())  # lint-imports wraps long names
    for contract in (
        "Imports point one way: cli -> executor | supervisor | webhook -> deployments -> flows -> tasks"
        " -> core KEPT",
        "The product never imports the development fleet (fleetflow_dev runs as a plugin process) KEPT",
        "Only fleetflow.kube talks to the kubernetes client KEPT",
        "Flows neither talk to Kubernetes nor render templates KEPT",
    ):
        assert contract in out, f"contract missing or broken: {contract}"


def test_the_product_makes_no_import_the_contracts_cannot_see() -> None:
    """No entry-point lookups, import_module or __import__: every dependency is a plain import."""
    hidden = ("entry_points(", "import_module(", "__import__(")
    found = [
        f"{path.relative_to(ROOT)}: {needle}"
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
        for needle in hidden
        if needle in path.read_text()
    ]
    assert found == []
