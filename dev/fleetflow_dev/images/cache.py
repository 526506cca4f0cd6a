"""The image cache: one tarball per image and set of inputs, written whole or not at all.

An image is rebuilt only when what it is made of changes. Its key is the sha256 of its
reference and of every input its recipe declares (the recipe's own version string, package
lists, the sha256 of the binaries and sources it packs), so the file name says which inputs made
it: ``<cache>/images/<short-name>-<key[:16]>.tar``. A build writes into a scratch directory next
to the cache and renames the finished tarball into place under a per-image file lock, so an
interrupted or concurrent build never leaves half an image behind. Old tarballs are not removed:
switching back to earlier inputs costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from fleetflow import config
from fleetflow.errors import BootstrapError
from fleetflow_dev import binaries
from fleetflow_dev.mounts import mounts_under, unmount_under

Progress = Callable[[str], None]


def images_root() -> Path:
    """``<cache>/images``, beside ``binaries.cache_root()`` (``<cache>/bin``)."""
    return config.cache_dir() / "images"


def cache_key(reference: str, inputs: Mapping[str, str]) -> str:
    """sha256 over the reference and the inputs, independent of the mapping's order."""
    canonical = json.dumps({"reference": reference, "inputs": dict(inputs)}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def cache_path(short_name: str, key: str) -> Path:
    return images_root() / f"{short_name}-{key[:16]}.tar"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_once(short_name: str, final: Path, build: Callable[[Path], Path]) -> bool:
    """Make sure ``final`` exists: if not, ``build(scratch)`` returns a finished tarball inside a
    scratch directory and it is renamed to ``final``. Returns whether a build ran."""
    if final.is_file():
        return False
    root = final.parent
    with binaries._lock(root / f".{short_name}.lock"):
        if final.is_file():
            return False  # another process built it while we waited for the lock
        scratch = Path(tempfile.mkdtemp(prefix=f".{final.stem}-", dir=root))
        try:
            built = build(scratch)
            os.replace(built, final)
        finally:
            remove_scratch(scratch)
    return True


def remove_scratch(scratch: Path) -> None:
    """Delete a scratch directory, first unmounting anything a killed build left mounted in it.

    mmdebstrap mounts /proc, /sys and device nodes into its chroot; deleting through a bind
    mount would delete the host's files, so a directory that still has mounts is left alone.
    """
    unmount_under(scratch)
    if mounts_under(scratch):
        raise BootstrapError(f"scratch directory {scratch} still has mounts; unmount them and delete it")
    shutil.rmtree(scratch, ignore_errors=True)
