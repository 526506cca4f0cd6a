"""A cluster cannot be registered under a namespace Kubernetes or fleetflow keeps for itself.

A registered cluster's record and kubeconfig live in the management cluster's namespace named
after it, so that RBAC on that namespace grants a team its cluster and nothing else. A cluster
named ``kube-system`` or ``fleetflow-system`` would share a namespace holding far more: the
name is refused before anything is written.
"""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from fleetflow.errors import UsageError
from fleetflow.registry import Registry, validate_cluster_name
from fleetflow.tasks.registry import validate_registration


@pytest.mark.parametrize(
    "name", ["default", "kube-system", "kube-public", "kube-node-lease", "fleetflow-system", "cnpg-system"]
)
def test_a_reserved_namespace_is_refused_before_anything_is_written(name: str) -> None:
    with pytest.raises(UsageError, match=f"'{name}'.*namespace"):
        validate_registration.fn(name, {"type": "app"})
    mgmt = MagicMock()
    with pytest.raises(UsageError, match=f"'{name}'"):
        Registry(mgmt).ensure_namespace(name)
    with pytest.raises(UsageError, match=f"'{name}'"):
        Registry(mgmt).apply(name, "ctx", {})
    assert not mgmt.method_calls


@pytest.mark.parametrize("name", ["mgmt", "workload-cluster", "kubernetes", "team-kube-system", "system"])
def test_other_names_are_accepted(name: str) -> None:
    assert validate_cluster_name(name) == name
