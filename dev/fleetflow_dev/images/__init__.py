"""Container images for the local fleet's real nodes, built without Docker and imported into containerd.

No registry is reachable from the nodes, so the images their pods run are made here, as OCI
image archives (``ctr images import`` and ``skopeo copy oci-archive:`` read them):

- ``docker.io/fleetflow/pause:3.10``: the sandbox image, Kubernetes' pause.c built static;
- ``docker.io/fleetflow/postgresql:15``: Debian's PostgreSQL 15 with ``postgres`` as uid 26, for
  CloudNativePG's instances and for psql;
- ``docker.io/fleetflow/cloudnative-pg:1.24.1``: the operator, from ``fleetflow_dev.binaries``' build.

Each is cached by its inputs (see :mod:`fleetflow_dev.images.cache`): a second call with the same
inputs builds nothing. Names are fully qualified because the kubelet looks images up by their
normalised reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from fleetflow_dev import binaries
from fleetflow_dev.images import archive, cache, cloudnative_pg, pause, postgresql
from fleetflow_dev.images.containerd import import_command, import_image, list_images
from fleetflow_dev.images.plan import Plan, Progress

PAUSE = pause.REFERENCE
POSTGRESQL = postgresql.REFERENCE
CLOUDNATIVE_PG = cloudnative_pg.REFERENCE
NAMES = (PAUSE, POSTGRESQL, CLOUDNATIVE_PG)

__all__ = [
    "CLOUDNATIVE_PG",
    "NAMES",
    "PAUSE",
    "POSTGRESQL",
    "ensure_images",
    "image_references",
    "import_command",
    "import_image",
    "list_images",
    "plans",
]


def _silent(_: str) -> None:
    pass


def plans(references: Iterable[str] = NAMES, cnpg_manager: Path | None = None) -> list[Plan]:
    """What each image in ``references`` is made of. The operator's binary is ``cnpg_manager`` or
    the cached build of ``fleetflow_dev.binaries`` (built now if missing: minutes)."""
    chosen = list(dict.fromkeys(references))
    unknown = [r for r in chosen if r not in NAMES]
    if unknown:
        raise ValueError(f"unknown image {unknown[0]!r}; known: {', '.join(NAMES)}")
    result = []
    for reference in chosen:
        if reference == PAUSE:
            result.append(pause.plan())
        elif reference == POSTGRESQL:
            result.append(postgresql.plan())
        else:
            manager = cnpg_manager or binaries.ensure(nodes=True)["cnpg-manager"]
            result.append(cloudnative_pg.plan(manager))
    return result


def ensure_images(
    progress: Progress = _silent, references: Iterable[str] = NAMES, cnpg_manager: Path | None = None
) -> dict[str, Path]:
    """Reference -> OCI archive for each image in ``references``, building (once) what is not cached."""
    found: dict[str, Path] = {}
    for plan in plans(references, cnpg_manager):
        if cache.build_once(plan.short_name, plan.path, _builder(plan, progress)):
            progress(f"built {plan.reference} into {plan.path}")
        found[plan.reference] = plan.path
    return found


def _builder(plan: Plan, progress: Progress) -> Callable[[Path], Path]:
    def build(scratch: Path) -> Path:
        return plan.build(scratch, progress)

    return build


def image_references(tarball: Path) -> list[str]:
    """The full references of the images in an OCI (or ``docker save``) archive, as the kubelet names
    them; UsageError (one line) if it names none."""
    return archive.references(tarball)
