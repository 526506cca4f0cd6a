"""Loading an image archive into a node's containerd, where the kubelet (CRI) finds it.

No registry is reachable, so every image a pod uses is imported into each node's containerd,
in the ``k8s.io`` namespace the CRI plugin reads, and unpacked for the ``overlayfs`` snapshotter
so the first pod does not wait for it. Only the host's platform is imported (no
``--all-platforms``): a multi-platform archive often holds one platform's blobs, and ours name
linux/amd64 in ``index.json``. ``ctr`` names images as the archive's ``index.json`` says;
a name the kubelet would normalise (``x/y:1`` is ``docker.io/x/y:1``) is tagged with its full
form as well, and every reported name is checked in ``ctr images ls``.
"""

from __future__ import annotations

from pathlib import Path

from fleetflow.errors import BootstrapError
from fleetflow_dev.images import archive, commands

NAMESPACE = "k8s.io"
SNAPSHOTTER = "overlayfs"
IMPORT_TIMEOUT = 600.0
CTR_TIMEOUT = 60.0


def import_command(tarball: Path, containerd_address: str, ctr: str = "ctr") -> list[str]:
    """The ``ctr images import`` that loads ``tarball`` under its own names, unpacked for overlayfs."""
    return [
        *_ctr(ctr, containerd_address),
        "images",
        "import",
        f"--snapshotter={SNAPSHOTTER}",
        str(tarball),
    ]


def import_image(tarball: Path, containerd_address: str, ctr: str = "ctr") -> list[str]:
    """Import ``tarball`` into the containerd at ``containerd_address``; return the full references it
    is now known by. UsageError if the archive names no image, BootstrapError if ``ctr`` fails."""
    stored = archive.stored_names(tarball)
    command = import_command(tarball, containerd_address, ctr)
    commands.run(command, timeout=IMPORT_TIMEOUT, name=f"ctr images import {tarball.name}")
    present = set(list_images(containerd_address, ctr))
    wanted = list(dict.fromkeys(archive.normalize(name) for name in stored))
    for name in stored:
        full = archive.normalize(name)
        if full not in present and name in present:
            tag = [*_ctr(ctr, containerd_address), "images", "tag", "--force", name, full]
            commands.run(tag, timeout=CTR_TIMEOUT, name="ctr images tag")
            present.add(full)
    missing = [name for name in wanted if name not in present]
    if missing:
        raise BootstrapError(
            f"'ctr images import {tarball.name}' finished but {', '.join(missing)} is not in 'ctr images ls'"
        )
    return wanted


def list_images(containerd_address: str, ctr: str = "ctr") -> list[str]:
    """The image names in the containerd's ``k8s.io`` namespace."""
    listing = [*_ctr(ctr, containerd_address), "images", "ls", "-q"]
    out = commands.run(listing, timeout=CTR_TIMEOUT, name="ctr images ls")
    return out.split()


def _ctr(ctr: str, containerd_address: str) -> list[str]:
    return [ctr, "--address", containerd_address, "--namespace", NAMESPACE]
