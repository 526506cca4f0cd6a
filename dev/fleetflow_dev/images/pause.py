"""``docker.io/fleetflow/pause:3.10``: the pod sandbox image, built from Kubernetes' own pause.c.

No registry is reachable, so the kubelet's sandbox image is made here: ``build/pause/linux/pause.c``
ships inside the ``k8s.io/kubernetes`` module the node binaries are built from; ``gcc -static``
makes a binary that needs nothing else, and it is the image's only file (``/pause``, the
entrypoint). The cache key covers pause.c's content and the compiler flags.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from fleetflow.errors import BootstrapError
from fleetflow_dev import versions
from fleetflow_dev.images import commands
from fleetflow_dev.images.cache import file_sha256
from fleetflow_dev.images.layout import Entry, Layout, write_layer
from fleetflow_dev.images.plan import Plan, Progress, finish

REFERENCE = "docker.io/fleetflow/pause:3.10"
# Change this string when the recipe below changes in a way its other inputs do not show.
RECIPE = "pause/1: gcc -static pause.c as /pause, one layer, entrypoint /pause"
CFLAGS = ("-static", "-O2", "-Wall", "-Werror", f"-DVERSION=kubernetes-{versions.KUBERNETES}")
GO_TIMEOUT = 600.0
GCC_TIMEOUT = 120.0


def pause_source() -> Path:
    """``build/pause/linux/pause.c`` in the ``k8s.io/kubernetes`` module (downloaded once by ``go``)."""
    go = shutil.which("go")
    if go is None:
        raise BootstrapError("cannot find pause.c: no Go toolchain ('go') on PATH to fetch k8s.io/kubernetes")
    module = f"k8s.io/kubernetes@{versions.KUBERNETES}"
    env = dict(os.environ, GOFLAGS="-mod=mod", GO111MODULE="on")
    with tempfile.TemporaryDirectory(prefix="fleetflow-pause-") as outside:  # not inside any Go module
        download = [go, "mod", "download", "-json", module]
        out = commands.run(download, timeout=GO_TIMEOUT, cwd=Path(outside), env=env)
    source = Path(json.loads(out)["Dir"]) / "build" / "pause" / "linux" / "pause.c"
    if not source.is_file():
        raise BootstrapError(f"{module} holds no build/pause/linux/pause.c; unknown layout")
    return source


def plan(source: Path | None = None) -> Plan:
    source = source or pause_source()
    inputs = {"recipe": RECIPE, "pause.c": file_sha256(source), "cflags": " ".join(CFLAGS)}

    def build(scratch: Path, progress: Progress) -> Path:
        progress(f"building {REFERENCE} from {source}")
        binary = scratch / "pause"
        compile_ = ["gcc", *CFLAGS, "-o", str(binary), str(source)]
        commands.run(compile_, timeout=GCC_TIMEOUT, name="gcc pause.c")
        layer = scratch / "layer.tar"
        write_layer(layer, [Entry("pause", "file", source=binary)])
        layout = Layout(scratch / "oci", REFERENCE.rsplit(":", 1)[1]).create()
        layout.add_layer(layer, f"gcc {' '.join(CFLAGS)} pause.c -o /pause")
        layout.configure(entrypoint=["/pause"])
        return finish(layout, REFERENCE, scratch)

    return Plan(REFERENCE, "pause", inputs, build)
