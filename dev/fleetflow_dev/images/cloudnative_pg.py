"""``docker.io/fleetflow/cloudnative-pg:1.24.1``: the CloudNativePG operator, built from its Go module.

Laid out as CNPG's own Dockerfile does: the binary is ``/bin/manager_amd64`` and ``/manager`` (the
entrypoint) links to it. The layout matters: the operator lists ``bin/manager_*`` to learn which
instance managers it can inject into PostgreSQL pods, and without one for amd64 every reconcile
fails with "invalid architecture: amd64". A static busybox is the rest of the file system (a
shell for debugging); the user is 65532, as in upstream's distroless image (the release manifest
runs the operator as 10001 anyway). The cache key covers the sha256 of both binaries.
"""

from __future__ import annotations

from pathlib import Path

from fleetflow.errors import BootstrapError
from fleetflow_dev import versions
from fleetflow_dev.images import commands
from fleetflow_dev.images.cache import file_sha256
from fleetflow_dev.images.layout import Entry, Layout, parents, write_layer
from fleetflow_dev.images.plan import Plan, Progress, finish

REFERENCE = f"docker.io/fleetflow/cloudnative-pg:{versions.CLOUDNATIVE_PG.lstrip('v')}"
# Change this string when the recipe below changes in a way its other inputs do not show.
RECIPE = "cloudnative-pg/1: busybox-static applets, /bin/manager_amd64, /manager link, user 65532"
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
USER = "65532:65532"
ETC_USERS = (  # /etc/passwd
    "root:x:0:0:root:/root:/bin/sh\n"
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
ETC_GROUPS = "root:x:0:\nnonroot:x:65532:\nnogroup:x:65534:\n"


def plan(manager: Path, busybox: Path | None = None) -> Plan:
    busybox = busybox or BUSYBOX
    for binary in (manager, busybox):
        if not binary.is_file():
            raise BootstrapError(f"cannot build {REFERENCE}: {binary} does not exist")
    inputs = {"recipe": RECIPE, "manager": file_sha256(manager), "busybox": file_sha256(busybox)}

    def build(scratch: Path, progress: Progress) -> Path:
        progress(f"building {REFERENCE} from {manager}")
        applets = commands.run([str(busybox), "--list-full"], timeout=30).split()
        files = [
            Entry("bin/busybox", "file", source=busybox),
            *(Entry(a, "symlink", target="/bin/busybox") for a in applets if a != "bin/busybox"),
            Entry("bin/manager_amd64", "file", source=manager),
            Entry("manager", "symlink", target="bin/manager_amd64"),
            Entry("etc/passwd", "file", mode=0o644, data=ETC_USERS.encode()),
            Entry("etc/group", "file", mode=0o644, data=ETC_GROUPS.encode()),
        ]
        dirs = [Entry("tmp", "dir", mode=0o1777)]
        layer = scratch / "layer.tar"
        write_layer(layer, [*parents(e.path for e in files), *dirs, *files])
        layout = Layout(scratch / "oci", REFERENCE.rsplit(":", 1)[1]).create()
        layout.add_layer(layer, "busybox-static, cmd/manager as /bin/manager_amd64, /manager")
        layout.configure(entrypoint=["/manager"], user=USER)
        return finish(layout, REFERENCE, scratch)

    return Plan(REFERENCE, "cloudnative-pg", inputs, build)
