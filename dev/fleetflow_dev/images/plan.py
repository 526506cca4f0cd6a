"""What one image is made of (the inputs its cache key hashes) and how to build it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fleetflow_dev.images import archive, cache
from fleetflow_dev.images.layout import Layout

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """An image to have in the cache: ``build(scratch, progress)`` returns its tarball in ``scratch``."""

    reference: str
    short_name: str
    inputs: Mapping[str, str]
    build: Callable[[Path, Progress], Path]

    @property
    def key(self) -> str:
        return cache.cache_key(self.reference, self.inputs)

    @property
    def path(self) -> Path:
        return cache.cache_path(self.short_name, self.key)

    @property
    def tag(self) -> str:
        return self.reference.rsplit(":", 1)[1]


def finish(layout: Layout, reference: str, scratch: Path) -> Path:
    """Drop replaced blobs and pack ``layout`` into ``scratch/image.tar`` under ``reference``."""
    layout.collect_garbage()
    out = scratch / "image.tar"
    archive.pack(layout.directory, layout.tag, reference, out)
    return out
