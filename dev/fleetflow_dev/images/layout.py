"""An OCI image layout built with umoci, without Docker: layers are tarballs we write ourselves.

A layer is a plain tar: ours are written here from a list of :class:`Entry` (the pause and
operator images: a few files owned by root), PostgreSQL's comes from mmdebstrap. ``umoci raw
add-layer`` adds a tar verbatim (compressed, its diff ID in the config, a history entry) without
unpacking anything, and ``umoci config`` sets the entrypoint, environment and user.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Literal

from fleetflow_dev.images import commands

UMOCI_TIMEOUT = 600.0  # compressing PostgreSQL's 200 MB layer takes about half a minute


@dataclass(frozen=True)
class Entry:
    """One file system entry of a layer, owned by root: a directory, a file or a symbolic link."""

    path: str
    kind: Literal["dir", "file", "symlink"]
    mode: int = 0o755
    source: Path | None = None  # a file's content comes from this file ...
    data: bytes = b""  # ... or is this
    target: str = ""  # a symbolic link's target


def write_layer(path: Path, entries: Iterable[Entry]) -> None:
    """Write ``entries`` as an uncompressed tar, every entry root-owned with mtime 0."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path.strip("/"))
            info.mode = entry.mode
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.target
                tar.addfile(info)
            elif entry.source is not None:
                info.size = entry.source.stat().st_size
                with entry.source.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                info.size = len(entry.data)
                tar.addfile(info, BytesIO(entry.data))


def parents(paths: Iterable[str]) -> list[Entry]:
    """Directory entries for every parent of ``paths``, parents first (a tar should list them)."""
    seen: dict[str, None] = {}
    for path in paths:
        parts = path.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            seen.setdefault("/".join(parts[:depth]))
    return [Entry(directory, "dir") for directory in sorted(seen, key=lambda d: (d.count("/"), d))]


class Layout:
    """An OCI layout directory holding one image under ``tag``, changed with umoci."""

    def __init__(self, directory: Path, tag: str, umoci: str = "umoci") -> None:
        self.directory = directory
        self.tag = tag
        self.umoci = umoci

    @property
    def image(self) -> str:
        return f"{self.directory}:{self.tag}"

    def create(self) -> Layout:
        self._umoci("init", "--layout", str(self.directory))
        self._umoci("new", "--image", self.image)
        return self

    def add_layer(self, layer: Path, created_by: str) -> None:
        self._umoci("raw", "add-layer", "--image", self.image, "--history.created_by", created_by, str(layer))

    def configure(
        self,
        *,
        entrypoint: Sequence[str] = (),
        cmd: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        user: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        args = ["config", "--image", self.image, "--history.created_by", "fleetflow fleetflow_dev.images"]
        if entrypoint:
            args += ["--clear=config.entrypoint", *(f"--config.entrypoint={a}" for a in entrypoint)]
        if cmd:
            args += ["--clear=config.cmd", *(f"--config.cmd={a}" for a in cmd)]
        if env:
            args += [f"--config.env={key}={value}" for key, value in env.items()]
        if user:
            args += [f"--config.user={user}"]
        for key, value in (labels or {}).items():
            args += [f"--config.label={key}={value}"]
        self._umoci(*args)

    def collect_garbage(self) -> None:
        """Drop the blobs that earlier steps replaced (each umoci change writes a new config and manifest)."""
        self._umoci("gc", "--layout", str(self.directory))

    def _umoci(self, *args: str) -> None:
        commands.run([self.umoci, *args], timeout=UMOCI_TIMEOUT)
