"""The secret search finds a secret in every form a leak takes, and names the place, not the value.

``test_secrets_nowhere`` passes only when the search finds nothing; these tests show that it
would have found a leak: plain, base64 at any alignment, base64 of base64 (a kubeconfig's key in
a Secret), a JSON-escaped PEM, in an SQLite row, a file and a process's environment.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.secret_search import Search

pytestmark = pytest.mark.security

PASSWORD = b"Zq8vN3xw-Kp2LmT7rY"


def _pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_each_form_of_a_leak_is_found_and_named_without_the_value(tmp_path: Path) -> None:
    key = _pem()
    search = Search({"the password": PASSWORD, "the key": key})
    kubeconfig = yaml.safe_dump({"users": [{"user": {"client-key-data": base64.b64encode(key).decode()}}]})
    for prefix in ("", "x", "xy"):  # every alignment inside a longer base64 text
        secret = {"data": {"kubeconfig": base64.b64encode((prefix + kubeconfig).encode()).decode()}}
        search.blob(f"kubeconfig Secret {len(prefix)}", json.dumps(secret))
        search.blob(f"password Secret {len(prefix)}", base64.b64encode(prefix.encode() + PASSWORD))
    search.blob("a log line", json.dumps({"message": f"failed: {key.decode()}"}))
    search.blob("a command line", b"psql\0--password=" + PASSWORD + b"\0")
    search.blob("unrelated", b"nothing to see" * 100)

    assert search.found["the key"] == {
        "kubeconfig Secret 0",
        "kubeconfig Secret 1",
        "kubeconfig Secret 2",
        "a log line",
    }
    assert search.found["the password"] == {
        "password Secret 0",
        "password Secret 1",
        "password Secret 2",
        "a command line",
    }
    report = search.report()
    assert "a log line" in report
    assert PASSWORD.decode() not in report
    assert key.decode().splitlines()[1] not in report


def test_a_row_a_file_and_an_environment_are_searched(tmp_path: Path) -> None:
    search = Search({"the password": PASSWORD})
    db = sqlite3.connect(tmp_path / "prefect.db")
    db.execute("create table log (id integer, message text, data blob)")
    db.execute("insert into log values (1, 'clean', ?)", (b"\x00" + PASSWORD,))
    db.commit()
    db.close()
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "state.json").write_bytes(b'{"x": "' + PASSWORD + b'"}')
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        env={"PGPASSWORD": PASSWORD.decode()},
    )
    try:
        search.sqlite(tmp_path / "prefect.db")
        search.files(tmp_path / "home")
        search.proc()
    finally:
        child.communicate(b"", timeout=30)
    places = search.found["the password"]
    assert "Prefect database log.data" in places
    assert str(tmp_path / "home" / "state.json") in places
    assert any(place.startswith(f"/proc/{child.pid} ") and place.endswith("environ") for place in places), (
        places
    )
