"""The stand-in's chart with CloudNativePG's real Cluster CRD, built once into the cache.

The chart in this package (``chart/``: Chart.yaml, values, the ConfigMap that says what runs
instead of the operator) ships no CRD. The CRD comes from the real release: the Go module
``github.com/cloudnative-pg/cloudnative-pg`` at the operator version of the seed's chart pin
(chart cloudnative-pg 0.22.1 is operator v1.24.1), fetched through the Go module proxy like the
fleet's other components, and never committed as a copy. So the API server validates every
Cluster fleetflow renders against CloudNativePG's own schema, defaults included, and a manifest
the real operator would reject is rejected here too.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from fleetflow.errors import BootstrapError
from fleetflow_dev import binaries

MODULE = "github.com/cloudnative-pg/cloudnative-pg"
VERSION = "v1.24.1"  # the operator of chart cloudnative-pg 0.22.1, the seed's pin
CRD = "config/crd/bases/postgresql.cnpg.io_clusters.yaml"
CHART_SOURCE = Path(__file__).resolve().parent / "chart"

Progress = Callable[[str], None]


def chart_dir(progress: Progress = binaries._silent) -> Path:
    """The built chart (cached per CloudNativePG version); builds it on first use."""
    final = binaries.cache_root() / f"cnpg-standin-chart-{VERSION}"
    if (final / "Chart.yaml").is_file() and (final / "crds" / Path(CRD).name).is_file():
        return final
    with binaries._lock(binaries.cache_root() / f".cnpg-standin-chart-{VERSION}.lock"):
        if (final / "crds" / Path(CRD).name).is_file():
            return final  # built by another process while we waited
        go = shutil.which("go")
        if go is None:
            raise BootstrapError(
                f"cannot fetch CloudNativePG {VERSION}'s CRDs: no Go toolchain ('go') on PATH"
            )
        progress(f"fetching CloudNativePG {VERSION}'s Cluster CRD from the Go module proxy (first time only)")
        scratch = Path(tempfile.mkdtemp(prefix="cnpg-chart-", dir=binaries.cache_root()))
        try:
            info = json.loads(binaries._go(go, ["mod", "download", "-json", f"{MODULE}@{VERSION}"], scratch))
            source = Path(info["Dir"]) / CRD
            if not source.is_file():
                raise BootstrapError(f"{MODULE}@{VERSION} has no {CRD}")
            chart = scratch / "chart"
            shutil.copytree(CHART_SOURCE, chart, ignore=shutil.ignore_patterns("crds"))
            (chart / "crds").mkdir()
            shutil.copyfile(source, chart / "crds" / source.name)
            if final.exists():
                shutil.rmtree(final)
            chart.rename(final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        progress(f"built the CloudNativePG stand-in chart with the real CRD into {final}")
    return final
