"""A helm that cannot be run is a fleetflow BootstrapError, not a stray ``FileNotFoundError``.

Retrying cannot bring a binary back, so it is not a TemporaryError; the message is one line that
names the path and the fix, and quotes nothing of the kubeconfig helm would have been given.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetflow import errors
from fleetflow.kube import helm
from fleetflow.kube.kubeconfig import Kubeconfig

SECRET = "c2VjcmV0LWtleS1kYXRh"


def _kubeconfig() -> Kubeconfig:
    return Kubeconfig(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
            "users": [{"name": "u", "user": {"client-key-data": SECRET}}],
            "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "ctx",
        },
        "ctx",
    )


def _install(binary: Path) -> None:
    helm.upgrade_install(binary, _kubeconfig(), release="op", chart="oci://x/op", namespace="ops")


def test_a_missing_helm_is_a_bootstrap_error_naming_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "helm"
    with pytest.raises(errors.BootstrapError) as info:
        _install(missing)
    message = str(info.value)
    assert message == (
        f"cannot run helm at {missing} (No such file or directory): "
        "install helm on PATH or set FLEETFLOW_HELM to its path"
    )
    assert "\n" not in message
    assert SECRET not in message
    assert "kubeconfig" not in message
    assert not isinstance(info.value, errors.TemporaryError), "retrying cannot bring a binary back"
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_a_helm_that_is_not_executable_is_a_bootstrap_error_too(tmp_path: Path) -> None:
    binary = tmp_path / "helm"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o600)
    with pytest.raises(errors.BootstrapError, match=r"^cannot run helm at .*/helm \(Permission denied\): "):
        _install(binary)
