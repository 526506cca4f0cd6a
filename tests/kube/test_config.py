"""Which kubeconfig fleetflow uses, and where it keeps state."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetflow import config


def test_explicit_flag_wins_over_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "env"))
    choice = config.resolve_kubeconfig(tmp_path / "flag")
    assert (choice.path, choice.source) == (tmp_path / "flag", "--kubeconfig")


def test_kubeconfig_env_uses_first_existing_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "b").write_text("")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert config.resolve_kubeconfig().path == tmp_path / "b"


def test_local_fleet_kubeconfig_is_used_when_nothing_else_says(tmp_path: Path) -> None:
    local = config.fleet_kubeconfig()
    local.parent.mkdir(parents=True)
    local.write_text("")
    choice = config.resolve_kubeconfig()
    assert (choice.path, choice.source) == (local, "local fleet")


def test_tests_never_see_the_developers_home() -> None:
    assert "fleetflow-home" in str(config.home())
