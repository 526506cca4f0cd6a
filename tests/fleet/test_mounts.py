"""Mounts below a directory are found from the kernel's table; a sibling with a common prefix is not."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fleetflow_dev.mounts import mounts_under, unmount_under


@pytest.fixture
def tmpfs(tmp_path: Path) -> Path:
    target = tmp_path / "node" / "volume one"  # a space: mountinfo escapes it as \040
    target.mkdir(parents=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(target)], capture_output=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    return target


def test_a_mount_below_is_found_and_removed(tmp_path: Path, tmpfs: Path) -> None:
    (tmp_path / "node-2").mkdir()
    assert mounts_under(tmp_path / "node") == [str(tmpfs)]
    assert mounts_under(tmp_path / "node-2") == []  # a common prefix is not "below"
    assert unmount_under(tmp_path / "node") == 1
    assert mounts_under(tmp_path / "node") == []
