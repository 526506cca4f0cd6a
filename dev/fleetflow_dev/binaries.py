"""Find or build the binaries of the local fleet: etcd, kube-apiserver, kube-controller-manager, helm.

No registry ships a kube-apiserver binary, so fleetflow builds them from the Go module proxy,
as upstream does, and caches them under ``<cache>/bin/<component>-<version>/`` so a version is
built once per machine. Precedence for each binary:

1. an explicit directory (``--assets DIR``), then ``KUBEBUILDER_ASSETS`` (envtest's variable),
2. the cache,
3. a build with the ``go`` toolchain (minutes on a cold machine, nothing on a warm one).

Each build runs in a scratch directory and its outputs are moved into the cache only when
complete, under a file lock, so an interrupted or concurrent bootstrap never leaves a
half-written binary behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fleetflow import config
from fleetflow.errors import BootstrapError
from fleetflow_dev import versions

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "helm")
# What a real node runs besides the runtime from Debian's packages (``fleetflow fleet up --nodes``).
NODE_BINARIES = ("kubelet", "kube-proxy", "kube-scheduler", "coredns", "cnpg-manager")


@dataclass(frozen=True)
class Component:
    """One Go module we build, and the binaries it yields."""

    name: str
    version: str
    binaries: tuple[str, ...]

    @property
    def cache_key(self) -> str:
        return f"{self.name}-{self.version}"


KUBERNETES = Component("kubernetes", versions.KUBERNETES, ("kube-apiserver", "kube-controller-manager"))
KUBERNETES_NODE = Component(
    "kubernetes-node", versions.KUBERNETES, ("kubelet", "kube-proxy", "kube-scheduler")
)
ETCD = Component("etcd", versions.ETCD, ("etcd",))
HELM = Component("helm", versions.HELM, ("helm",))
COREDNS = Component("coredns", versions.COREDNS, ("coredns",))
# The operator binary, which is also the instance manager CloudNativePG copies into every
# PostgreSQL pod; its release manifest (CRDs, RBAC, Deployment, webhooks) is kept beside it.
CLOUDNATIVE_PG = Component("cloudnative-pg", versions.CLOUDNATIVE_PG, ("cnpg-manager", "cnpg-release.yaml"))
COMPONENTS = (ETCD, KUBERNETES, HELM)
NODE_COMPONENTS = (KUBERNETES_NODE, COREDNS, CLOUDNATIVE_PG)


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of the fleet's binaries and where each came from."""

    paths: dict[str, Path]
    sources: dict[str, str]

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]


Progress = Callable[[str], None]


def _silent(_: str) -> None:
    pass


def cache_root() -> Path:
    return config.cache_dir() / "bin"


def _override_dir(explicit: str | os.PathLike[str] | None) -> tuple[Path, str] | None:
    if explicit:
        directory, source = Path(explicit).expanduser(), "--assets"
    elif os.environ.get("KUBEBUILDER_ASSETS"):
        directory, source = (
            Path(os.environ["KUBEBUILDER_ASSETS"]).expanduser(),
            "KUBEBUILDER_ASSETS",
        )
    else:
        return None
    if not directory.is_dir():
        raise BootstrapError(f"{source} directory {directory} does not exist")
    return directory, source


def _executable(path: Path) -> bool:
    if path.suffix == ".yaml":  # a build's data file, kept beside its binary
        return path.is_file()
    return path.is_file() and os.access(path, os.X_OK)


def locate(
    assets: str | os.PathLike[str] | None = None, nodes: bool = False
) -> tuple[Binaries, list[Component]]:
    """Paths found without building, and the components that still have to be built."""
    override = _override_dir(assets)
    paths: dict[str, Path] = {}
    sources: dict[str, str] = {}
    missing: list[Component] = []
    for component in COMPONENTS + (NODE_COMPONENTS if nodes else ()):
        for binary in component.binaries:
            if override and _executable(override[0] / binary):
                paths[binary], sources[binary] = override[0] / binary, override[1]
                continue
            cached = cache_root() / component.cache_key / binary
            if _executable(cached):
                paths[binary], sources[binary] = cached, "cache"
            elif component not in missing:
                missing.append(component)
    return Binaries(paths, sources), missing


def ensure(
    assets: str | os.PathLike[str] | None = None, progress: Progress = _silent, nodes: bool = False
) -> Binaries:
    """Return every binary (with ``nodes``, a node's too), building those neither supplied nor cached."""
    found, missing = locate(assets, nodes)
    if not missing:
        return found
    go = shutil.which("go")
    if go is None:
        names = ", ".join(b for c in missing for b in c.binaries)
        raise BootstrapError(
            f"cannot build {names}: no Go toolchain ('go') on PATH. Install Go 1.24 or newer, "
            "or supply prebuilt binaries with --assets DIR or KUBEBUILDER_ASSETS=DIR "
            f"(a directory holding {', '.join(BINARIES)})"
        )
    for component in missing:
        _build_locked(component, go, progress)
    found, missing = locate(assets, nodes)
    if missing:  # pragma: no cover - a build that succeeds always installs its binaries
        raise BootstrapError(f"build of {missing[0].name} finished without its binaries")
    return found


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_locked(component: Component, go: str, progress: Progress) -> None:
    final = cache_root() / component.cache_key
    with _lock(cache_root() / f".{component.cache_key}.lock"):
        if all(_executable(final / b) for b in component.binaries):
            return  # another bootstrap built it while we waited for the lock
        progress(f"building {component.name} {component.version} with {go} (first time only)")
        scratch = Path(tempfile.mkdtemp(prefix=f"{component.cache_key}-", dir=cache_root()))
        try:
            out = scratch / "bin"
            out.mkdir()
            _BUILDERS[component.name](component, go, scratch, out)
            if final.exists():
                shutil.rmtree(final)
            out.rename(final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        progress(f"built {component.name} {component.version} into {final}")


def _go(go: str, args: list[str], cwd: Path) -> str:
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod -buildvcs=false", GO111MODULE="on")
    proc = subprocess.run([go, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "; ".join(line for line in proc.stderr.strip().splitlines()[-5:])
        raise BootstrapError(f"'go {' '.join(args[:2])}' failed in {cwd}: {tail}")
    return proc.stdout


def _wrapper_module(
    directory: Path, requires: dict[str, str], replaces: dict[str, str], imports: list[str]
) -> None:
    lines = ["module fleetflow.local/build", "", "go 1.24.0", ""]
    lines += [f"require {mod} {ver}" for mod, ver in requires.items()]
    lines += [f"replace {mod} => {mod} {ver}" for mod, ver in replaces.items()]
    (directory / "go.mod").write_text("\n".join(lines) + "\n")
    body = "\n".join(f'\t_ "{pkg}"' for pkg in imports)
    (directory / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{body}\n)\n")


def _build_flags(version_ldflags: str = "") -> list[str]:
    return [
        "-trimpath",
        "-tags=selinux,notest,grpcnotrace",
        "-ldflags",
        f"-s -w {version_ldflags}".strip(),
    ]


def _build_kubernetes(component: Component, go: str, scratch: Path, out: Path) -> None:
    module = f"k8s.io/kubernetes@{component.version}"
    info = json.loads(_go(go, ["mod", "download", "-json", module], scratch))
    staging = _staging_modules(Path(info["GoMod"]).read_text())
    # k8s.io/kubernetes pins its staging modules at v0.0.0 with `replace` lines that are
    # ignored in a dependency; map each to its published tag: v1.X.Y -> v0.X.Y.
    staging_version = "v0" + component.version[2:]
    _wrapper_module(
        scratch,
        {"k8s.io/kubernetes": component.version},
        {name: staging_version for name in staging},
        [f"k8s.io/kubernetes/cmd/{b}" for b in component.binaries],
    )
    _go(go, ["mod", "tidy"], scratch)
    version = component.version
    ldflags = (
        f"-X k8s.io/component-base/version.gitVersion={version} "
        f"-X k8s.io/client-go/pkg/version.gitVersion={version} "
        "-X k8s.io/component-base/version.gitTreeState=clean"
    )
    packages = [f"k8s.io/kubernetes/cmd/{b}" for b in component.binaries]
    _go(go, ["build", *_build_flags(ldflags), "-o", str(out) + "/", *packages], scratch)


def _staging_modules(gomod: str) -> list[str]:
    """Names of the modules that k8s.io/kubernetes' go.mod maps to ./staging/src/."""
    names = []
    for line in gomod.splitlines():
        if "=> ./staging/src/" in line:
            names.append(line.split()[0])
    if not names:
        raise BootstrapError("k8s.io/kubernetes' go.mod lists no staging modules; unknown layout")
    return names


def _build_etcd(component: Component, go: str, scratch: Path, out: Path) -> None:
    module = "go.etcd.io/etcd/server/v3"
    _wrapper_module(scratch, {module: component.version}, {}, [module])
    _go(go, ["mod", "tidy"], scratch)
    _go(go, ["build", *_build_flags(), "-o", str(out / "etcd"), module], scratch)


def _build_helm(component: Component, go: str, scratch: Path, out: Path) -> None:
    package = "helm.sh/helm/v3/cmd/helm"
    _wrapper_module(scratch, {"helm.sh/helm/v3": component.version}, {}, [package])
    _go(go, ["mod", "tidy"], scratch)
    ldflags = f"-X helm.sh/helm/v3/internal/version.version={component.version}"
    _go(go, ["build", *_build_flags(ldflags), "-o", str(out / "helm"), package], scratch)


def _build_coredns(component: Component, go: str, scratch: Path, out: Path) -> None:
    module = "github.com/coredns/coredns"
    _wrapper_module(scratch, {module: component.version}, {}, [module])
    _go(go, ["mod", "tidy"], scratch)
    _go(go, ["build", *_build_flags(), "-o", str(out / "coredns"), module], scratch)


def _build_cloudnative_pg(component: Component, go: str, scratch: Path, out: Path) -> None:
    module = "github.com/cloudnative-pg/cloudnative-pg"
    package = f"{module}/cmd/manager"
    _wrapper_module(scratch, {module: component.version}, {}, [package])
    _go(go, ["mod", "tidy"], scratch)
    _go(go, ["build", *_build_flags(), "-o", str(out / "cnpg-manager"), package], scratch)
    info = json.loads(_go(go, ["mod", "download", "-json", f"{module}@{component.version}"], scratch))
    release = Path(info["Dir"]) / "releases" / f"cnpg-{component.version.lstrip('v')}.yaml"
    if not release.is_file():
        raise BootstrapError(f"CloudNativePG {component.version}'s module holds no {release.name}")
    shutil.copyfile(release, out / "cnpg-release.yaml")


_BUILDERS: dict[str, Callable[[Component, str, Path, Path], None]] = {
    "kubernetes": _build_kubernetes,
    "kubernetes-node": _build_kubernetes,
    "coredns": _build_coredns,
    "cloudnative-pg": _build_cloudnative_pg,
    "etcd": _build_etcd,
    "helm": _build_helm,
}
