"""The API token: where it comes from, how it is stored, and how requests are checked."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from fleetflow.errors import ConfigError
from fleetflow.registry import Registry
from fleetflow.webhook import auth, create_app
from fleetflow.webhook.auth import TOKEN_ENV, check_bearer, load_or_create_token
from tests.support.webhook_api import call

pytestmark = pytest.mark.security

TOKEN = "s3cret-token-for-tests"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_env_variable_wins_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "api-token").write_text("from-the-file\n")
    (tmp_path / "api-token").chmod(0o600)
    monkeypatch.setenv(TOKEN_ENV, " from-the-env\n")
    assert load_or_create_token(tmp_path) == ("from-the-env", tmp_path / "api-token", False)
    fresh = tmp_path / "fresh"
    assert load_or_create_token(fresh) == ("from-the-env", fresh / "api-token", False)
    assert not fresh.exists()


def test_a_new_token_is_stored_owner_only_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    home = tmp_path / "home"
    token, path, created = load_or_create_token(home)
    assert created
    assert path == home / "api-token"
    assert len(token) >= 43  # secrets.token_urlsafe(32)
    assert path.read_text() == f"{token}\n"
    assert mode(path) == 0o600
    assert mode(home) == 0o700
    assert [p.name for p in home.iterdir()] == ["api-token"]  # no temporary file left behind
    assert load_or_create_token(home) == (token, path, False)
    other_home = tmp_path / "other"
    assert load_or_create_token(other_home)[0] != token


def test_the_file_is_never_wider_than_0600_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    opened: list[tuple[int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        opened.append((flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    old = os.umask(0)
    try:
        _, path, created = load_or_create_token(tmp_path)
    finally:
        os.umask(old)
    assert created
    assert mode(path) == 0o600
    # Created 0600 and exclusively from the first byte, not chmod-ed afterwards.
    assert opened
    assert all(m == 0o600 and flags & os.O_CREAT and flags & os.O_EXCL for flags, m in opened)


def test_a_token_created_meanwhile_by_another_process_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    theirs = tmp_path / "api-token"
    real_read = auth._read
    calls = []

    def read_then_lose_the_race(path: Path) -> str | None:
        calls.append(path)
        if len(calls) == 1:  # we look: nothing; then the other process writes its token
            theirs.write_text("theirs\n")
            theirs.chmod(0o600)
            return None
        return real_read(path)

    monkeypatch.setattr(auth, "_read", read_then_lose_the_race)
    assert load_or_create_token(tmp_path) == ("theirs", theirs, False)
    assert theirs.read_text() == "theirs\n"
    assert [p.name for p in tmp_path.iterdir()] == ["api-token"]


@pytest.mark.parametrize(
    ("content", "file_mode", "problem"), [("abc\n", 0o644, "chmod 600"), ("\n", 0o600, "empty")]
)
def test_an_unusable_token_file_is_refused_without_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, file_mode: int, problem: str
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    path = tmp_path / "api-token"
    path.write_text(content)
    path.chmod(file_mode)
    with pytest.raises(ConfigError, match=problem) as caught:
        load_or_create_token(tmp_path)
    assert str(path) in str(caught.value)
    assert "abc" not in str(caught.value)
    assert path.read_text() == content  # left alone


def test_the_token_is_never_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    caplog.set_level(logging.DEBUG)
    token, path, _ = load_or_create_token(tmp_path)
    load_or_create_token(tmp_path)
    assert str(path) in caplog.text  # where it is, yes
    assert token not in caplog.text
    assert all(token not in repr(r.args) for r in caplog.records)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer  {TOKEN} ", True),
        (None, False),
        ("", False),
        ("Bearer", False),
        ("Bearer ", False),
        (f"Basic {TOKEN}", False),
        (TOKEN, False),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        ("Bearer wrong", False),
        ("Bearer tökén", False),
    ],
)
def test_check_bearer(header: str | None, ok: bool) -> None:
    problem = check_bearer(header, TOKEN)
    assert (problem is None) is ok
    if problem:
        assert TOKEN not in problem
        assert TOKEN[:-1] not in problem


def _unreachable() -> Registry:
    raise AssertionError("an unauthenticated request must not reach the registry")


@pytest.fixture
def app() -> FastAPI:
    return create_app(_unreachable, TOKEN)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/databases", None),
        ("GET", "/v1/databases/some-cluster", None),
        ("DELETE", "/v1/databases/some-cluster", None),
        ("POST", "/v1/databases", b'{"cluster": "some-cluster"}'),
        ("POST", "/v1/databases", b"{not json"),  # 401, not 422: nothing is parsed before auth
        ("POST", "/v1/databases", b'{"cluster": "Not_A_Name"}'),
        ("GET", "/v1/no-such-route", None),  # 401, not 404: routes are not disclosed
        ("GET", "/v1", None),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}"])
def test_every_v1_route_needs_the_token(
    app: FastAPI, method: str, path: str, body: bytes | None, authorization: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    response = call(app, method, path, content=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert set(response.json()) == {"detail"}
    assert TOKEN not in response.text


def test_the_token_is_not_in_the_app_or_its_openapi(app: FastAPI) -> None:
    assert TOKEN not in call(app, "GET", "/openapi.json").text
    call(app, "GET", "/v1/databases")  # builds the middleware stack
    assert TOKEN not in repr(app.middleware_stack)


def test_an_empty_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty"):
        create_app(_unreachable, " ")
