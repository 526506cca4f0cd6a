"""OCI image archives: a layout packed into one tarball, named so containerd imports it by its full name.

``ctr images import`` names an image after the annotations of its entry in ``index.json``:
``io.containerd.image.name`` first, else ``org.opencontainers.image.ref.name`` when that holds a
whole reference (a bare tag becomes ``import-<date>:<tag>``, which no pod asks for). Ours carry
both: the full reference for containerd, the tag for tools that follow the OCI convention
(``skopeo copy oci-archive:x.tar:3.10``). The kubelet looks images up by normalised reference
(``x/y:tag`` is ``docker.io/x/y:tag``), so that is the name we write and report.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

from fleetflow.errors import UsageError

CONTAINERD_NAME = "io.containerd.image.name"
OCI_REF_NAME = "org.opencontainers.image.ref.name"
PLATFORM = {"architecture": "amd64", "os": "linux"}


def pack(layout: Path, tag: str, reference: str, out: Path) -> None:
    """Name the image tagged ``tag`` in ``layout`` as ``reference`` and write the layout as a tarball."""
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text())
    chosen = [m for m in index.get("manifests", []) if m.get("annotations", {}).get(OCI_REF_NAME) == tag]
    if len(chosen) != 1:
        raise ValueError(f"{layout} holds {len(chosen)} images tagged {tag!r}, expected one")
    manifest = dict(chosen[0])
    manifest["annotations"] = {OCI_REF_NAME: tag, CONTAINERD_NAME: reference}
    manifest["platform"] = PLATFORM
    index["manifests"] = [manifest]
    index_path.write_text(json.dumps(index, separators=(",", ":")))
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(layout.rglob("*"), key=lambda p: (p != layout / "oci-layout", str(p))):
            info = tar.gettarinfo(str(path), str(path.relative_to(layout)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)


def normalize(name: str) -> str:
    """The reference the kubelet looks for: ``nginx`` is ``docker.io/library/nginx:latest``."""
    remainder, at, digest = name.partition("@")
    domain, slash, path = remainder.partition("/")
    if not slash:
        domain, path = "docker.io", f"library/{remainder}"
    elif "." not in domain and ":" not in domain and domain != "localhost":
        domain, path = "docker.io", remainder
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    if not at and ":" not in path.rsplit("/", 1)[-1]:
        path += ":latest"
    return f"{domain}/{path}{at}{digest}"


def stored_names(tarball: Path) -> list[str]:
    """The names ``ctr images import`` gives the images in ``tarball``, as written there (not normalised).

    Raises UsageError (one line) when the file is no image archive or names no image.
    """
    try:
        with tarfile.open(tarball, "r:*") as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
            if "index.json" in members:
                names = _index_names(_read_json(tar, members["index.json"], tarball))
            elif "manifest.json" in members:  # a `docker save` archive from before Docker 25
                names = _docker_names(_read_json(tar, members["manifest.json"], tarball))
            else:
                raise UsageError(f"{tarball} is not an OCI image archive: it holds no index.json")
    except (OSError, tarfile.TarError) as exc:
        raise UsageError(f"{tarball} cannot be read as an image archive: {exc}") from exc
    if not names:
        raise UsageError(
            f"{tarball} names no image: its index.json has no {CONTAINERD_NAME} annotation and no "
            f"{OCI_REF_NAME} holding a full reference (a bare tag is not enough)"
        )
    return list(dict.fromkeys(names))


def references(tarball: Path) -> list[str]:
    """The full references (``docker.io/x/y:tag``) of the images in an OCI or Docker image archive."""
    return list(dict.fromkeys(normalize(name) for name in stored_names(tarball)))


def _read_json(tar: tarfile.TarFile, member: tarfile.TarInfo, tarball: Path) -> Any:
    handle = tar.extractfile(member)
    if handle is None:  # pragma: no cover - members are regular files
        raise UsageError(f"{tarball}: {member.name} cannot be read")
    try:
        return json.loads(handle.read())
    except ValueError as exc:
        raise UsageError(f"{tarball}: {member.name} is not JSON ({exc})") from exc


def _index_names(index: Any) -> list[str]:
    names = []
    manifests = index.get("manifests", []) if isinstance(index, dict) else []
    for manifest in manifests if isinstance(manifests, list) else []:
        annotations = manifest.get("annotations") if isinstance(manifest, dict) else None
        if not isinstance(annotations, dict):
            continue
        name = annotations.get(CONTAINERD_NAME) or ""
        ref = annotations.get(OCI_REF_NAME) or ""
        if isinstance(name, str) and name:
            names.append(name)
        elif isinstance(ref, str) and any(c in ref for c in "/:@"):
            names.append(ref)
    return names


def _docker_names(manifest: Any) -> list[str]:
    entries = manifest if isinstance(manifest, list) else []
    return [tag for entry in entries if isinstance(entry, dict) for tag in entry.get("RepoTags") or []]
