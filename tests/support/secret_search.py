"""Search everywhere a secret could have leaked to, and say where each one was found.

A leak is rarely the plain value: a password travels base64-encoded in a Secret's data, a
kubeconfig's key is base64 of a PEM inside YAML that is itself base64 in a Secret, and a PEM
may be JSON-escaped in a log line. So each secret is looked for as itself, as base64 (at the
three alignments it can have inside a longer base64 text), as base64 of that, and, for a PEM,
as one line of its body (which survives any escaping of its line breaks). Findings name the
secret by a label and the place, never the value, so a failure can be printed.
"""

from __future__ import annotations

import base64
import re
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

MIN_LENGTH = 12  # shorter values would match by chance
PAGE = 200


def _base64_forms(value: bytes) -> list[bytes]:
    """base64 of VALUE as it appears at offset 0, 1 and 2 (mod 3) of a longer encoded text."""
    forms = []
    for offset, skip in ((0, 0), (1, 2), (2, 3)):
        encoded = base64.b64encode(b"\0" * offset + value).rstrip(b"=")
        forms.append(encoded[skip:-4])  # the ends depend on neighbouring bytes: drop them
    return [f for f in forms if len(f) >= MIN_LENGTH]


def forms(value: bytes) -> list[bytes]:
    """Every form of VALUE the search looks for."""
    plain = [value]
    if value.startswith(b"-----BEGIN"):
        body = [line for line in value.splitlines() if line and not line.startswith(b"-----")]
        plain.append(body[len(body) // 2])
    once = [encoded for p in plain for encoded in _base64_forms(p)]
    twice = [encoded for o in once for encoded in _base64_forms(o)]
    return [f for f in plain + once + twice if len(f) >= MIN_LENGTH]


@dataclass
class Search:
    """Look for SECRETS (label -> value) in blobs, files, an SQLite database, /proc and Prefect's API."""

    secrets: dict[str, bytes]
    found: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    searched: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def __post_init__(self) -> None:
        short = [label for label, value in self.secrets.items() if len(value) < MIN_LENGTH]
        assert not short, f"too short to search for without false matches: {short}"
        self._owner = {f: label for label, value in self.secrets.items() for f in forms(value)}
        self._pattern = re.compile(
            b"|".join(re.escape(f) for f in sorted(self._owner, key=len, reverse=True))
        )

    def blob(self, where: str, data: bytes | str) -> None:
        raw = data.encode(errors="surrogateescape") if isinstance(data, str) else data
        for match in self._pattern.finditer(raw):
            self.found[self._owner[match.group()]].add(where)

    def files(self, root: Path, skip: Callable[[Path], bool] = lambda _path: False) -> None:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink() and not skip(path):
                self.blob(str(path), path.read_bytes())
                self.searched[f"files under {root}"] += 1

    def sqlite(self, path: Path) -> None:
        """Every text and blob value of every table, then the files themselves (free pages, WAL)."""
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [row[0] for row in db.execute("select name from sqlite_master where type = 'table'")]
            for table in tables:
                cursor = db.execute(f'select * from "{table}"')  # noqa: S608 - names from sqlite_master
                columns = [c[0] for c in cursor.description]
                for row in cursor:
                    self.searched["Prefect database rows"] += 1
                    for column, value in zip(columns, row, strict=True):
                        if isinstance(value, str | bytes):
                            self.blob(f"Prefect database {table}.{column}", value)
        finally:
            db.close()
        for sibling in path.parent.glob(path.name + "*"):
            self.blob(f"Prefect database file {sibling.name}", sibling.read_bytes())

    def proc(self) -> None:
        """The command line and environment of every process this user can read."""
        for pid in Path("/proc").iterdir():
            if not pid.name.isdigit():
                continue
            try:
                comm = (pid / "comm").read_text().strip()
                for part in ("cmdline", "environ"):
                    self.blob(f"/proc/{pid.name} ({comm}) {part}", (pid / part).read_bytes())
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue  # gone meanwhile, or not ours to read
            self.searched["processes"] += 1

    def prefect_api(self, api_url: str) -> None:
        """Flow runs (parameters, states), task runs, logs, artifacts, events and the rest of the API."""
        with httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=60) as client:
            for what, body in (
                ("flow_runs", {}),
                ("task_runs", {}),
                ("logs", {}),
                ("artifacts", {}),
                ("deployments", {}),
                ("automations", {}),
                ("variables", {}),
                ("block_documents", {"include_secrets": True}),
            ):
                for item in self._pages(client, f"{what}/filter", body):
                    self.searched[f"API {what}"] += 1
                    self.blob(f"Prefect API {what}", repr(item))
                    if what == "flow_runs":
                        for state in call(
                            client, "GET", "flow_run_states/", params={"flow_run_id": item["id"]}
                        ):
                            self.blob("Prefect API flow_run_states", repr(state))
            for event in self.events(client):
                self.searched["API events"] += 1
                self.blob(f"Prefect API events ({event['event']})", repr(event))

    @staticmethod
    def _pages(client: httpx.Client, path: str, body: dict[str, Any]) -> Iterable[Any]:
        offset = 0
        while True:
            page = call(client, "POST", path, json={**body, "limit": PAGE, "offset": offset})
            yield from page
            if len(page) < PAGE:
                return
            offset += PAGE

    @staticmethod
    def events(client: httpx.Client) -> Iterable[dict[str, Any]]:
        """Every event the server stored, all pages."""
        page = call(client, "POST", "events/filter", json={"limit": 50})
        while True:
            yield from page["events"]
            if not page.get("next_page"):
                return
            page = call(client, "GET", page["next_page"])

    def report(self) -> str:
        return "\n".join(
            f"{label}: found in {', '.join(sorted(places))}" for label, places in sorted(self.found.items())
        )


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """One API call's JSON; connection errors, 429 and 5xx (SQLite busy under load) are retried."""
    for attempt in range(6):
        try:
            response = client.request(method, path, **kwargs)
        except httpx.TransportError:
            if attempt == 5:
                raise
        else:
            if (response.status_code != 429 and response.status_code < 500) or attempt == 5:
                response.raise_for_status()
                return response.json()
        time.sleep(0.25 * 2**attempt)  # backoff before retrying a transient failure
    raise AssertionError("unreachable")
