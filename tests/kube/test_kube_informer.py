"""The informer against a scripted API server (httpx's MockTransport): which requests it makes
(list, then watch from the list's resourceVersion, bookmarks asked for, a server-side timeout),
how it resumes after a dropped stream, relists after 410 Gone, backs off on transient failures,
raises permanent ones, and stops cleanly. Real API servers: tests/kube/test_informer.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fleetflow.backoff import Backoff
from fleetflow.errors import APIForbiddenError, APIUnavailableError
from fleetflow.kube.hub import Hub
from fleetflow.kube.informer import Event, Informer
from tests.support.eventually import eventually

PATH = "/api/v1/namespaces/ns/configmaps"
HANG = b""  # in a watch script: the stream stays open, silent
FAST = Backoff(first=0.01, cap=0.02, jitter=0.0)


def obj(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version}}


def line(kind: str, body: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": body}).encode() + b"\n"


class Server:
    """Answers lists from ``listings`` (one per list, the last repeated) and watches from
    ``watches`` (one script per watch request: lines, then an optional exception); every
    request is recorded."""

    def __init__(self, listings: list[Any], watches: list[list[Any]]) -> None:
        self.listings, self.watches = listings, watches
        self.requests: list[httpx.Request] = []
        self.lists = 0
        self.watch_count = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.params.get("watch") != "1":
            answer = self.listings[min(self.lists, len(self.listings) - 1)]
            self.lists += 1
            if isinstance(answer, int):
                return httpx.Response(answer, json={"kind": "Status", "message": f"HTTP {answer} said"})
            if isinstance(answer, Exception):
                raise answer
            items, version = answer
            return httpx.Response(200, json={"items": items, "metadata": {"resourceVersion": version}})
        script = self.watches[min(self.watch_count, len(self.watches) - 1)]
        self.watch_count += 1
        if isinstance(script, int):
            return httpx.Response(script, json={"kind": "Status", "code": script, "message": "too old"})

        async def body() -> AsyncIterator[bytes]:
            for item in script:
                if isinstance(item, Exception):
                    raise item
                if item is HANG:
                    await asyncio.Event().wait()  # an open watch with nothing to say
                yield item

        return httpx.Response(200, content=body())

    def watch_params(self) -> list[dict[str, str]]:
        return [dict(r.url.params) for r in self.requests if r.url.params.get("watch") == "1"]


def informer(server: Server, **kwargs: Any) -> Informer:
    http = httpx.AsyncClient(transport=httpx.MockTransport(server), base_url="https://api")
    return Informer(None, "v1", "ConfigMap", namespace="ns", http=http, path=PATH, context="test", **kwargs)


def collect(inf: Informer, count: int, timeout: float = 5.0) -> list[Event]:
    async def main() -> list[Event]:
        found: list[Event] = []
        async with asyncio.timeout(timeout):
            async for event in inf.events():
                found.append(event)
                if len(found) == count:
                    return found
        return found

    return asyncio.run(main())


def test_lists_then_watches_from_the_listed_version_with_bookmarks_and_a_server_timeout() -> None:
    server = Server([([obj("a", "5")], "7")], [[line("ADDED", obj("b", "8"))]])
    events = collect(informer(server, watch_timeout=42, label_selector="app=x"), 2)
    assert [e.type for e in events] == ["SYNCED", "ADDED"]
    assert [i["metadata"]["name"] for i in events[0].items] == ["a"]
    assert events[1].name == "b"
    params = server.watch_params()[0]
    assert params["resourceVersion"] == "7"
    assert params["allowWatchBookmarks"] == "true"
    assert params["timeoutSeconds"] == "42"
    assert params["labelSelector"] == "app=x"
    assert server.requests[0].url.params["labelSelector"] == "app=x"


def test_a_dropped_stream_resumes_from_the_last_version_seen_without_relisting() -> None:
    bookmark = {"metadata": {"resourceVersion": "12"}}
    server = Server(
        [([], "7")],
        [
            [line("ADDED", obj("a", "9")), line("BOOKMARK", bookmark), httpx.ReadError("reset")],
            [line("MODIFIED", obj("a", "13"))],
        ],
    )
    inf = informer(server, backoff=FAST)
    events = collect(inf, 3)
    assert [e.type for e in events] == ["SYNCED", "ADDED", "MODIFIED"], "a bookmark is not handed on"
    assert server.lists == 1
    assert [p["resourceVersion"] for p in server.watch_params()[:2]] == ["7", "12"]


@pytest.mark.parametrize("gone", ["event", "status"], ids=["410-error-event", "410-answer"])
def test_410_gone_relists_and_says_so_with_a_new_synced(gone: str) -> None:
    expired: Any = [line("ERROR", {"kind": "Status", "code": 410, "message": "too old"})]
    server = Server(
        [([obj("a", "5")], "7"), ([obj("a", "5"), obj("b", "20")], "21")],
        [expired if gone == "event" else 410, [line("ADDED", obj("c", "22"))]],
    )
    events = collect(informer(server, backoff=FAST), 3)
    assert [e.type for e in events] == ["SYNCED", "SYNCED", "ADDED"]
    assert [i["metadata"]["name"] for i in events[1].items] == ["a", "b"]
    assert [p["resourceVersion"] for p in server.watch_params()[:2]] == ["7", "21"]


def test_transient_failures_back_off_and_retry() -> None:
    server = Server([503, httpx.ConnectError("refused"), ([], "3")], [[line("ADDED", obj("a", "4"))]])
    inf = informer(server, backoff=FAST)
    events = collect(inf, 2)
    assert [e.type for e in events] == ["SYNCED", "ADDED"]
    assert server.lists == 3


def test_an_unreachable_server_at_the_first_list_is_the_callers_error_when_asked() -> None:
    server = Server([httpx.ConnectError("refused")], [[]])
    with pytest.raises(APIUnavailableError, match="cannot reach the API server"):
        collect(informer(server, backoff=FAST, retry_unreachable=False), 1)


def test_a_server_that_answers_503_at_the_first_list_is_waited_for_even_so() -> None:
    """An API server just started answers 503 ("storage is (re)initializing") before it serves:
    it is reachable, so it is waited for; only a server that cannot be reached is refused."""
    server = Server([503, 503, ([], "3")], [[line("ADDED", obj("a", "4"))]])
    events = collect(informer(server, backoff=FAST, retry_unreachable=False), 2)
    assert [e.type for e in events] == ["SYNCED", "ADDED"]
    assert server.lists == 3


def test_the_backoff_budget_ends_the_retries() -> None:
    server = Server([503], [[]])
    with pytest.raises(APIUnavailableError, match="HTTP 503 said"):
        collect(informer(server, backoff=Backoff(first=0.01, cap=0.01, attempts=3)), 1)
    assert server.lists == 4


def test_a_permanent_failure_is_raised() -> None:
    server = Server([403], [[]])
    with pytest.raises(APIForbiddenError):
        collect(informer(server, backoff=FAST), 1)
    assert server.lists == 1


def test_a_kind_not_served_yet_is_looked_at_again_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fleetflow.kube.informer.NOT_SERVED_BACKOFF", FAST)
    server = Server([404, 404, ([], "2")], [[line("ADDED", obj("a", "3"))]])
    events = collect(informer(server, retry_not_served=True), 2)
    assert [e.type for e in events] == ["SYNCED", "ADDED"]
    assert server.lists == 3


def test_a_watch_that_ends_at_once_with_nothing_backs_off_instead_of_spinning() -> None:
    server = Server([([], "2")], [[], [], [line("ADDED", obj("a", "3"))]])
    events = collect(informer(server, backoff=FAST, watch_timeout=60), 2)
    assert [e.type for e in events] == ["SYNCED", "ADDED"]
    assert server.watch_count == 3
    assert server.lists == 1, "an ended watch resumes; it does not relist"


class Recorder:
    def __init__(self, block: threading.Event | None = None) -> None:
        self.batches: list[list[Event]] = []
        self.block = block
        self.called = threading.Event()

    def __call__(self, batch: list[Event]) -> None:
        self.batches.append(batch)
        self.called.set()
        if self.block is not None:
            self.block.wait(5)


def test_the_hub_hands_batches_in_order_off_the_loop_and_stops_cleanly() -> None:
    server = Server(
        [([obj("a", "1")], "1")], [[*(line("ADDED", obj(f"o{i}", str(i + 2))) for i in range(5)), HANG]]
    )
    hub = Hub(handler_threads=1)
    handler = Recorder()
    watch = hub.watch(informer(server, backoff=FAST, watch_timeout=60), handler, name="test")
    assert watch.synced.wait(5), "the first listing was handled"
    eventually(lambda: sum(len(b) for b in handler.batches) >= 6, "six events handled", timeout=5)
    flat = [e for batch in handler.batches for e in batch]
    assert flat[0].type == "SYNCED"
    assert [e.name for e in flat[1:6]] == [f"o{i}" for i in range(5)], "in order"
    watch.stop()
    assert watch.join(5), "stopped"
    assert watch.error is None


def test_a_watch_whose_informer_fails_ends_with_that_error() -> None:
    server = Server([403], [[]])
    hub = Hub(handler_threads=1)
    watch = hub.watch(informer(server, backoff=FAST), Recorder(), name="test")
    with pytest.raises(APIForbiddenError):
        watch.join(5)


def test_a_handler_that_fails_transiently_gets_a_fresh_listing_after_a_backoff() -> None:
    """As a restart would: the handler (which failed writing to an API server that went away)
    sees what is there again, and the watch goes on."""
    server = Server([([obj("a", "1")], "1")], [[HANG]])
    attempts: list[list[str]] = []

    def handle(batch: list[Event]) -> None:
        attempts.append([e.type for e in batch])
        if len(attempts) == 1:
            raise APIUnavailableError("patch ConfigMap state: cannot reach the API server")

    watch = Hub(handler_threads=1).watch(
        informer(server, backoff=FAST, watch_timeout=60), handle, name="test"
    )
    assert watch.synced.wait(5), "the second listing was handled"
    assert attempts == [["SYNCED"], ["SYNCED"]]
    assert server.lists == 2
    assert not watch.done.is_set(), "the watch goes on"
    watch.stop()
