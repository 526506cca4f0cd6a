"""Finding the fleet's binaries: overrides, cache, and the message when Go is missing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from fleetflow_dev import binaries

from fleetflow.errors import BootstrapError


def _fake_binary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def empty_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    return tmp_path / "cache" / "fleetflow" / "bin"


def test_missing_go_names_the_binaries_and_the_way_out(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-go-here"))
    with pytest.raises(BootstrapError) as info:
        binaries.ensure()
    message = str(info.value)
    assert "no Go toolchain" in message
    assert "kube-apiserver" in message
    assert "KUBEBUILDER_ASSETS" in message
    assert "\n" not in message
    assert not any(empty_cache.glob("*/*")), "nothing half-built may be left in the cache"


def test_kubebuilder_assets_override_the_cache(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assets = tmp_path / "assets"
    for name in binaries.BINARIES:
        _fake_binary(assets / name)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    found, missing = binaries.locate()
    assert missing == []
    assert found["kube-apiserver"] == assets / "kube-apiserver"
    assert set(found.sources.values()) == {"KUBEBUILDER_ASSETS"}


def test_explicit_assets_win_and_partial_overrides_fall_back_to_cache(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    explicit = tmp_path / "explicit"
    _fake_binary(explicit / "etcd")
    _fake_binary(empty_cache / f"kubernetes-{binaries.KUBERNETES.version}" / "kube-apiserver")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "ignored"))
    (tmp_path / "ignored").mkdir()
    found, missing = binaries.locate(explicit)
    assert found.sources["etcd"] == "--assets"
    assert found.sources["kube-apiserver"] == "cache"
    # kube-controller-manager is neither supplied nor cached: kubernetes must still be built.
    assert [c.name for c in missing] == ["kubernetes", "helm"]


def test_a_missing_assets_directory_is_an_error(empty_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(BootstrapError, match="does not exist"):
        binaries.locate(tmp_path / "nope")


def test_cache_is_keyed_by_version(empty_cache: Path) -> None:
    _fake_binary(empty_cache / "etcd-v0.0.1" / "etcd")  # an older pin is not reused
    _, missing = binaries.locate()
    assert binaries.ETCD in missing


def test_staging_modules_are_read_from_kubernetes_go_mod() -> None:
    gomod = (
        "module k8s.io/kubernetes\n\nreplace (\n"
        "\tk8s.io/api => ./staging/src/k8s.io/api\n"
        "\tk8s.io/client-go => ./staging/src/k8s.io/client-go\n)\n"
    )
    assert binaries._staging_modules(gomod) == ["k8s.io/api", "k8s.io/client-go"]
    with pytest.raises(BootstrapError):
        binaries._staging_modules("module x\n")


def test_non_executable_files_are_not_binaries(empty_cache: Path, tmp_path: Path) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "etcd").write_text("not executable")
    os.chmod(assets / "etcd", 0o644)
    found, _ = binaries.locate(assets)
    assert "etcd" not in found.paths
