"""The benchmark scripts in scripts/ still load: nothing runs them in CI (their targets are
figures, not tests), so a moved module broke ``bench_platform.py``'s import unnoticed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).parents[2] / "scripts").glob("*.py"))


def test_there_are_benchmark_scripts() -> None:
    assert {p.name for p in SCRIPTS} >= {"bench_platform.py", "bench_label_events.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_benchmark_script_imports_what_it_uses(script: Path) -> None:
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs the imports; main() only runs under __main__
    assert callable(module.main), f"{script.name} has no main()"
