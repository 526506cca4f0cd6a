"""The API's bearer token: where it comes from, and how a request's token is checked.

``FLEETFLOW_API_TOKEN`` wins; otherwise the token lives in ``$FLEETFLOW_HOME/api-token``,
generated on first use and written owner-only (mode 0600) from the first byte: it is created
under a temporary name, owner-only, and linked into place (:func:`fleetflow.files.write_atomic`
with ``exclusive``), so no other user can ever read it, a concurrent starter never sees a
half-written file, and of two starters the first one's token wins. The token itself is never
logged, printed or put in a response; only the file's path is.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fleetflow.errors import ConfigError
from fleetflow.files import write_atomic

TOKEN_ENV = "FLEETFLOW_API_TOKEN"  # noqa: S105 (a variable name, not a secret)
TOKEN_FILE = "api-token"  # noqa: S105 (a file name, not a secret)

log = logging.getLogger(__name__)


def token_path(home: Path) -> Path:
    return home / TOKEN_FILE


def load_or_create_token(home: Path) -> tuple[str, Path, bool]:
    """``(token, path, created)``: the env variable, else ``<home>/api-token``, else a new token.

    With ``FLEETFLOW_API_TOKEN`` set, ``path`` is where the file would be and nothing is read or
    written. ``created`` is True only when this call generated and stored a new token.
    """
    path = token_path(home)
    from_env = os.environ.get(TOKEN_ENV, "").strip()
    if from_env:
        return from_env, path, False
    existing = _read(path)
    if existing is not None:
        return existing, path, False
    token = secrets.token_urlsafe(32)
    if _create(path, token):
        log.info("generated a new API token in %s", path)
        return token, path, True
    # Somebody else created it between our read and our link: theirs wins.
    winner = _read(path)
    if winner is None:
        raise ConfigError(f"API token file {path} vanished while it was being created")
    return winner, path, False


def _read(path: Path) -> str | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"API token file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"API token file {path} is accessible by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"run 'chmod 600 {path}' or delete it to generate a new token"
        )
    token = path.read_text().strip()
    if not token:
        raise ConfigError(f"API token file {path} is empty; delete it to generate a new token")
    return token


def _create(path: Path, token: str) -> bool:
    """Store ``token`` at ``path`` unless a file is there already; False if one was."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return write_atomic(path, f"{token}\n", 0o600, exclusive=True)


def check_bearer(authorization: str | None, token: str) -> str | None:
    """None if ``authorization`` carries ``token``; otherwise why not (safe to show, no token in it)."""
    if not authorization:
        return "missing bearer token: send 'Authorization: Bearer <token>'"
    scheme, _, presented = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return "malformed Authorization header: expected 'Bearer <token>'"
    if not hmac.compare_digest(presented.strip().encode(), token.encode()):
        return "invalid bearer token"
    return None


class BearerAuth:
    """ASGI middleware: every HTTP request under ``prefix`` needs the bearer token.

    It runs before routing and body parsing, so an unauthenticated caller learns nothing, not
    even whether a route exists or how its body is validated: every answer is the same 401.
    """

    def __init__(self, app: ASGIApp, token: str, prefix: str = "/v1") -> None:
        if not token:
            raise ConfigError("the API token must not be empty")
        self.app = app
        self._token = token
        self._prefix = prefix.rstrip("/")

    def __repr__(self) -> str:  # never show the token, even in a debugger or a log of the app
        return f"{type(self).__name__}(prefix={self._prefix!r})"

    def _protected(self, scope: Scope) -> bool:
        path = str(scope.get("path", ""))
        root = str(scope.get("root_path", ""))
        if root and path.startswith(root):
            path = path[len(root) :]
        return path == self._prefix or path.startswith(self._prefix + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._protected(scope):
            problem = check_bearer(Headers(scope=scope).get("authorization"), self._token)
            if problem is not None:
                response = JSONResponse(
                    {"detail": problem}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
