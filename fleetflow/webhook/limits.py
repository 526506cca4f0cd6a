"""Bounds on a request body, enforced before the application sees it.

uvicorn and FastAPI read a body whole, whatever its size, and hand JSON to the C parser, which
fails on deep nesting, invalid UTF-8 or a 5000-digit number with a bare 400 "There was an error
parsing the body", and lets ``NaN`` through to a validation error that cannot be serialised
(a 500). :class:`BodyLimits` sits between the bearer check and the application and:

- answers 413 as soon as ``Content-Length`` announces more than :data:`MAX_BODY` bytes, and for
  a chunked or lying body as soon as the bytes received pass it: it never keeps more than the
  limit (uvicorn then drops the rest as it arrives);
- answers 408 when the body has not arrived within :data:`BODY_SECONDS` (a client that announced
  more than it sends would otherwise hold the request open for ever);
- answers 422 when a body is not UTF-8 JSON of at most :data:`MAX_DEPTH` levels, with standard
  values only (no ``NaN``/``Infinity``, no repeated keys), naming the problem on one line.

Every answer is ``{"detail": "<one line>"}``. The body then goes to the application unchanged.

uvicorn also waits for ever for the headers of a request that never completes them (a
"slowloris" client holds a connection and its descriptor for as long as it likes):
:func:`header_timeout_protocol` closes a connection with no request in progress after
:data:`HEADER_SECONDS`, counted from when it was opened or its last answer was sent.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_BODY = 64 * 1024  # bytes; the largest valid request is well under 1 KiB
MAX_DEPTH = 32  # nesting levels of arrays and objects; a valid request has 1
BODY_SECONDS = 10.0  # the whole body must arrive within this time
HEADER_SECONDS = 10.0  # a request's headers must arrive within this time


class BodyProblem(Exception):
    """Why a body is refused: an HTTP status and one line that names the problem."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _reject_constant(name: str) -> Any:
    raise BodyProblem(422, f"request body is not valid JSON: {name} is not a JSON number")


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise BodyProblem(422, f"request body is not valid JSON: key {key[:64]!r} appears twice")
        obj[key] = value
    return obj


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


def check_json(body: bytes, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`BodyProblem` unless ``body`` is UTF-8 JSON within the limits."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyProblem(
            422, f"request body is not UTF-8: byte 0x{body[exc.start]:02x} at offset {exc.start}"
        ) from None
    too_deep = f"request body is nested deeper than {max_depth} levels"
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_repeated_keys)
    except RecursionError:
        raise BodyProblem(422, too_deep) from None
    except ValueError as exc:  # JSONDecodeError, or a number with more digits than int() takes
        raise BodyProblem(
            422, f"request body is not valid JSON: {' '.join(str(exc).split())[:200]}"
        ) from None
    if _depth(value) > max_depth:
        raise BodyProblem(422, too_deep)


class BodyLimits:
    """ASGI middleware: read at most ``max_body`` bytes within ``seconds``, check them, pass them on."""

    def __init__(
        self,
        app: ASGIApp,
        max_body: int = MAX_BODY,
        max_depth: int = MAX_DEPTH,
        seconds: float = BODY_SECONDS,
    ) -> None:
        self.app, self.max_body, self.max_depth, self.seconds = app, max_body, max_depth, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(Headers(scope=scope), receive)
            if body is None:  # the client went away
                return
            if body:
                check_json(body, self.max_depth)
        except BodyProblem as problem:
            # After a 413, uvicorn reads and drops the rest of the body (closing at once would reset
            # a client still sending it, before it read the answer); a stalled one is let go.
            headers = {"Connection": "close"} if problem.status == 408 else None
            await JSONResponse({"detail": problem.detail}, problem.status, headers)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, headers: Headers, receive: Receive) -> bytes | None:
        limit = f"the limit is {self.max_body} bytes"
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise BodyProblem(413, f"request body of {int(declared)} bytes is too large: {limit}")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        raise BodyProblem(413, f"request body is too large: {limit}")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise BodyProblem(
                408, f"request body not received within {self.seconds:g} s ({size} bytes arrived)"
            ) from None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body once, then whatever the server sends (a disconnect)."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def header_timeout_protocol(seconds: float = HEADER_SECONDS) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose next request's headers are ``seconds`` late.

    A request being answered is not cut (its body has :class:`BodyLimits`' own deadline); an idle
    keep-alive connection is closed earlier by uvicorn's keep-alive timeout.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _headers_due: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._headers_due is not None:
                self._headers_due.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._headers_due is not None:
                self._headers_due.cancel()
            self._headers_due = self.loop.call_later(seconds, self._headers_late)

        def _headers_late(self) -> None:
            idle = self.cycle is None or self.cycle.response_complete
            if idle and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol
