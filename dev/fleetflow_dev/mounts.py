"""Mounts below a directory, read from the kernel's mount table, and their removal.

Nodes leave container root file systems, pod network namespaces and volumes mounted under their
directories; an image build leaves /proc and /sys mounted in its chroot when it is killed.
Deleting through a mount would reach what is mounted there, so both unmount first.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def mounts_under(*roots: Path) -> list[str]:
    """Mount points at or below any of ``roots``, shallowest first."""
    prefixes = [str(root.resolve()).rstrip("/") for root in roots]
    found = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # octal escapes: \\040 is a space
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            found.add(point)
    return sorted(found, key=len)


def unmount_under(*roots: Path) -> int:
    """Lazily unmount every mount at or below ``roots``, deepest first; returns how many there were."""
    points = mounts_under(*roots)
    for point in reversed(points):
        subprocess.run(["umount", "--lazy", point], capture_output=True, timeout=60, check=False)
    return len(points)
