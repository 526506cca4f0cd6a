"""A helm command that hangs becomes a fleetflow error, not a stray ``subprocess.TimeoutExpired``.

The fake helm is a real executable that never finishes; the timeout is shortened for the test.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fleetflow import errors
from fleetflow.kube import helm
from fleetflow.kube.kubeconfig import Kubeconfig

SECRET = "c2VjcmV0LWtleS1kYXRh"


def _hanging_helm(tmp_path: Path) -> Path:
    path = tmp_path / "helm"
    path.write_text("#!/bin/sh\nexec sleep 60\n")  # exec: the killed process is the one holding the pipes
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


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


def test_a_hanging_helm_is_a_temporary_error_naming_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(helm, "HELM_TIMEOUT", 0.2)
    with pytest.raises(errors.TemporaryError) as info:
        helm.upgrade_install(
            _hanging_helm(tmp_path), _kubeconfig(), release="op", chart="oci://x/op", namespace="ops"
        )
    err = info.value
    assert isinstance(err, errors.CommandTimeoutError)
    message = str(err)
    assert message == "helm list ops/op timed out after 0.2s"
    assert "\n" not in message
    assert SECRET not in message
    assert "kubeconfig" not in message
    assert err.__cause__ is None  # the TimeoutExpired (quoting the argv) is not chained
    assert err.__suppress_context__
