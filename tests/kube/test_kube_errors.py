"""The client library's failures become fleetflow's error tree, with the server's own message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from fleetflow import errors
from fleetflow.kube import client_for, contexts
from fleetflow.kube.errors import translate


def _api_exception(status: int, message: str = "boom") -> ApiException:
    exc = ApiException(status=status, reason="r")
    exc.body = json.dumps({"kind": "Status", "message": message, "reason": "Invalid"})
    return exc


@pytest.mark.parametrize(
    ("status", "cls", "temporary"),
    [
        (404, errors.APINotFoundError, False),
        (403, errors.APIForbiddenError, False),
        (422, errors.APIInvalidError, False),
        (409, errors.APIConflictError, True),
        (410, errors.APIGoneError, True),  # a watch from a resourceVersion gone: relist, not give up
        (429, errors.APIUnavailableError, True),
        (503, errors.APIUnavailableError, True),
        (405, errors.PermanentError, False),
    ],
)
def test_status_codes_decide_retry(status: int, cls: type[errors.APIError], temporary: bool) -> None:
    err = translate(_api_exception(status, "the message"), "apply thing")
    assert type(err) is cls
    assert isinstance(err, errors.TemporaryError) is temporary
    assert str(err) == "apply thing: the message"
    assert err.status == status


def test_connection_failures_are_temporary() -> None:
    err = translate(ConnectionRefusedError(), "get x")
    assert isinstance(err, errors.TemporaryError)


def test_missing_context_lists_the_ones_that_exist(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\ncontexts:\n- name: a\n  context: {cluster: a, user: a}\n")
    assert contexts(path) == ["a"]
    with pytest.raises(errors.ConfigError, match=r"context 'b' not found .* it has: a"):
        client_for("b", path)


def test_malformed_kubeconfig_error_does_not_quote_its_content(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("client-key-data: SECRETSECRET\n: [unclosed")
    with pytest.raises(errors.ConfigError) as info:
        client_for("a", path)
    assert "SECRETSECRET" not in str(info.value)
    assert str(path) in str(info.value)


def test_server_side_apply_schema_failure_is_invalid_not_retried() -> None:
    exc = _api_exception(
        500,
        "failed to create typed patch object (ns/d; apps/v1, Kind=Deployment): "
        ".spec.replicas: expected numeric (int or float), got string",
    )
    err = translate(exc, "apply d")
    assert type(err) is errors.APIInvalidError
    assert not isinstance(err, errors.TemporaryError)
