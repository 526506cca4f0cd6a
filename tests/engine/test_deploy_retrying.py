"""Deployments are applied through a busy or restarting Prefect server: 5xx and connection
errors are retried with backoff until a deadline, a 4xx fails at once."""

from __future__ import annotations

import httpx
import pytest
from prefect.deployments.runner import DeploymentApplyError
from prefect.exceptions import PrefectHTTPStatusError

from fleetflow.deployments.retrying import retrying, transient


def _status(code: int) -> PrefectHTTPStatusError:
    request = httpx.Request("POST", "http://prefect.test/api/deployments/")
    response = httpx.Response(code, request=request)
    return PrefectHTTPStatusError.from_httpx_error(
        httpx.HTTPStatusError(f"{code}", request=request, response=response)
    )


def _wrapped(code: int) -> DeploymentApplyError:
    """What RunnerDeployment.apply raises: its own error, raised from the HTTP error."""
    try:
        try:
            raise _status(code)
        except PrefectHTTPStatusError as exc:
            raise DeploymentApplyError(f"Error while applying deployment: {exc}") from exc
    except DeploymentApplyError as outer:
        return outer


@pytest.mark.parametrize("code", [500, 503, 429, 408])
def test_a_busy_server_is_transient_also_inside_prefects_apply_error(code: int) -> None:
    assert transient(_status(code))
    assert transient(_wrapped(code))


@pytest.mark.parametrize("code", [400, 404, 409, 422])
def test_a_refused_deployment_is_not_transient(code: int) -> None:
    assert not transient(_wrapped(code))


def test_a_connection_error_is_transient() -> None:
    assert transient(httpx.ConnectError("connection refused"))


def test_retrying_waits_out_a_503_and_returns_the_result() -> None:
    answers: list[Exception | str] = [_wrapped(503), _wrapped(503), "id-1"]
    slept: list[float] = []

    def call() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert retrying("apply", call, sleep=slept.append) == "id-1"
    assert len(slept) == 2
    assert 0.4 <= slept[0] <= 0.5  # doubling, jittered by up to 20 %
    assert 0.8 <= slept[1] <= 1.0


def test_retrying_fails_at_once_on_a_4xx() -> None:
    slept: list[float] = []

    def call() -> str:
        raise _wrapped(422)

    with pytest.raises(DeploymentApplyError):
        retrying("apply", call, sleep=slept.append)
    assert slept == []


def test_retrying_gives_up_at_its_deadline() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    def call() -> str:
        raise _wrapped(503)

    with pytest.raises(DeploymentApplyError):
        retrying("apply", call, deadline_seconds=20, sleep=sleep, clock=lambda: now[0])
    assert 15 <= now[0] <= 20, "retried until its deadline, never past it"
