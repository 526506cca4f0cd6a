"""Server-side apply does not force unless asked; a conflict is permanent and names the owner.

Taking over another manager's field against a real API server is shown by
tests/kube/test_kube_client_real.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleetflow import errors
from tests.support.kube_fakes import Dynamic, Resource, Result, job, kube


def test_apply_does_not_force_conflicts_unless_asked() -> None:
    dynamic = Dynamic()
    client = kube(dynamic)
    client.apply(job())
    client.apply(job(), force=True)
    assert [kwargs["force_conflicts"] for _, kwargs in dynamic.res.calls] == [False, True]


def test_apply_status_does_not_force_conflicts_unless_asked() -> None:
    dynamic = Dynamic()
    client = kube(dynamic)
    client.apply_status(job())
    client.apply_status(job(), force=True)
    assert [kwargs["force_conflicts"] for _, kwargs in dynamic.res.calls] == [False, True]


def test_an_apply_conflict_is_permanent_and_says_who_owns_the_field() -> None:
    from kubernetes.client.exceptions import ApiException

    class Conflicting(Resource):
        def server_side_apply(self, **kwargs: Any) -> Result:
            exc = ApiException(status=409, reason="Conflict")
            exc.body = json.dumps(
                {
                    "kind": "Status",
                    "reason": "Conflict",
                    "message": 'Apply failed with 2 conflicts: conflicts with "kubectl-edit" using '
                    "batch/v1:\n- .spec.parallelism\n- .spec.completions",
                }
            )
            raise exc

    dynamic = Dynamic()
    dynamic.res = Conflicting()
    with pytest.raises(errors.ApplyConflictError) as info:
        kube(dynamic).apply(job())
    assert not isinstance(info.value, errors.TemporaryError)  # retrying gets the same answer
    assert info.value.status == 409
    assert '"kubectl-edit"' in str(info.value)
    assert "batch/v1: - .spec.parallelism - .spec.completions" in str(info.value)  # on one line
