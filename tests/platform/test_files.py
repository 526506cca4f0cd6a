"""fleetflow.files.write_atomic: old or new content, exact modes, secrets never exposed, no leftovers."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from fleetflow.files import write_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_text_and_bytes_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert write_atomic(path, "first ☃\n")
    assert path.read_text(encoding="utf-8") == "first ☃\n"
    assert write_atomic(path, b"\x00second")
    assert path.read_bytes() == b"\x00second"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "cert.pem", "c", 0o644)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "cert.pem") == 0o644
    write_atomic(tmp_path / "cert.pem", "c", 0o600)  # replacing changes the mode too
    assert _mode(tmp_path / "cert.pem") == 0o600


def test_without_mode_a_new_file_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "plain", "x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "plain") == 0o640


def test_a_secret_is_owner_only_from_its_first_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[int] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        if flags & os.O_CREAT:
            created.append(mode)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy)
    write_atomic(tmp_path / "token", "secret", 0o600)
    write_atomic(tmp_path / "public", "cert", 0o644)
    assert created == [0o600, 0o600]  # 0644 is given only after creation, to a file not yet in place


def test_exclusive_never_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "api-token"
    assert write_atomic(path, "mine", 0o600, exclusive=True)
    assert not write_atomic(path, "theirs", 0o600, exclusive=True)
    assert path.read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["api-token"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state"
    write_atomic(path, "old")

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old"
    (tmp_path / "directory").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "directory", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["directory", "state"]
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "file", "x")


def test_concurrent_writers_never_mix(tmp_path: Path) -> None:
    path = tmp_path / "shared"
    bodies = [bytes([65 + i]) * 200_000 for i in range(4)]
    threads = [threading.Thread(target=write_atomic, args=(path, body)) for body in bodies for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert path.read_bytes() in bodies
    assert [p.name for p in tmp_path.iterdir()] == ["shared"]
