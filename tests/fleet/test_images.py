"""fleetflow_dev.images without building: cache keys follow the inputs, archives' names are read and
normalised, a nameless archive is a one-line UsageError, a cached image is never rebuilt and a failed
build leaves nothing behind."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from fleetflow_dev import images
from fleetflow_dev.images import archive, cache, cloudnative_pg, commands, pause, postgresql

from fleetflow.errors import BootstrapError, UsageError


@pytest.fixture(autouse=True)
def own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(cloudnative_pg, "BUSYBOX", _file(tmp_path / "bin" / "busybox", b"busybox"))
    return tmp_path / "cache" / "fleetflow" / "images"


def _file(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _archive(path: Path, members: dict[str, Any]) -> Path:
    """A tar holding each member as JSON (dicts, lists) or bytes."""
    with tarfile.open(path, "w") as tar:
        for name, value in members.items():
            data = value if isinstance(value, bytes) else json.dumps(value).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _index(*annotations: dict[str, str]) -> dict[str, Any]:
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + "0" * 64,
        "size": 1,
    }
    manifests = [{**entry, "annotations": a} for a in annotations]
    return {"schemaVersion": 2, "manifests": manifests}


# cache keys


def test_cache_key_depends_on_every_input_and_the_reference_but_not_on_order() -> None:
    inputs = {"recipe": "r/1", "packages": "a,b", "binary": "ab" * 32}
    key = cache.cache_key("docker.io/x/y:1", inputs)
    assert cache.cache_key("docker.io/x/y:1", dict(reversed(inputs.items()))) == key
    assert cache.cache_key("docker.io/x/y:1", dict(inputs)) == key
    for name in inputs:
        assert cache.cache_key("docker.io/x/y:1", {**inputs, name: inputs[name] + "x"}) != key, name
    assert cache.cache_key("docker.io/x/y:1", {**inputs, "extra": ""}) != key
    assert cache.cache_key("docker.io/x/y:2", inputs) != key


def test_pause_key_follows_pause_c_content(tmp_path: Path, own_cache: Path) -> None:
    source = _file(tmp_path / "pause.c", b"int main(void) { return 0; }\n")
    first = pause.plan(source)
    assert pause.plan(source).key == first.key
    _file(tmp_path / "elsewhere" / "pause.c", source.read_bytes())
    assert pause.plan(tmp_path / "elsewhere" / "pause.c").key == first.key, "the path is no input"
    source.write_bytes(b"int main(void) { return 1; }\n")
    changed = pause.plan(source)
    assert changed.key != first.key
    assert changed.path != first.path
    assert first.path == own_cache / f"pause-{first.key[:16]}.tar"


def test_operator_key_follows_both_binaries(tmp_path: Path) -> None:
    manager = _file(tmp_path / "cnpg-manager", b"manager v1")
    busybox = _file(tmp_path / "busybox", b"busybox")
    first = cloudnative_pg.plan(manager, busybox).key
    assert cloudnative_pg.plan(manager, busybox).key == first
    manager.write_bytes(b"manager v2")
    second = cloudnative_pg.plan(manager, busybox).key
    assert second != first
    busybox.write_bytes(b"busybox 2")
    assert cloudnative_pg.plan(manager, busybox).key not in (first, second)


def test_postgresql_key_is_stable_and_covers_the_package_list(monkeypatch: pytest.MonkeyPatch) -> None:
    key = postgresql.plan().key
    assert postgresql.plan().key == key
    monkeypatch.setattr(postgresql, "PACKAGES", (*postgresql.PACKAGES, "barman-cli-cloud"))
    assert postgresql.plan().key != key


# archives' names


def test_references_prefer_containerd_name_and_normalise(tmp_path: Path) -> None:
    tarball = _archive(
        tmp_path / "a.tar",
        {
            "oci-layout": {"imageLayoutVersion": "1.0.0"},
            "index.json": _index(
                {archive.OCI_REF_NAME: "3.10", archive.CONTAINERD_NAME: "docker.io/fleetflow/pause:3.10"},
                {archive.OCI_REF_NAME: "fleetflow/app:2"},  # a whole reference: ctr uses it as it is
                {archive.OCI_REF_NAME: "latest"},  # a bare tag: ctr would invent a name
                {archive.OCI_REF_NAME: "registry.local:5000/team/tool"},
            ),
        },
    )
    assert archive.stored_names(tarball) == [
        "docker.io/fleetflow/pause:3.10",
        "fleetflow/app:2",
        "registry.local:5000/team/tool",
    ]
    assert images.image_references(tarball) == [
        "docker.io/fleetflow/pause:3.10",
        "docker.io/fleetflow/app:2",
        "registry.local:5000/team/tool:latest",
    ]


@pytest.mark.parametrize(
    ("name", "full"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("docker.io/busybox:1", "docker.io/library/busybox:1"),
        ("fleetflow/pause:3.10", "docker.io/fleetflow/pause:3.10"),
        ("localhost/x:1", "localhost/x:1"),
        ("ghcr.io/cloudnative-pg/postgresql:15", "ghcr.io/cloudnative-pg/postgresql:15"),
        ("x/y@sha256:" + "a" * 64, "docker.io/x/y@sha256:" + "a" * 64),
    ],
)
def test_normalize_is_what_the_kubelet_looks_up(name: str, full: str) -> None:
    assert archive.normalize(name) == full


def test_docker_save_archives_are_named_by_their_repo_tags(tmp_path: Path) -> None:
    tarball = _archive(tmp_path / "d.tar", {"manifest.json": [{"Config": "c.json", "RepoTags": ["app:1"]}]})
    assert images.image_references(tarball) == ["docker.io/library/app:1"]


def test_nameless_archive_is_a_one_line_usage_error(tmp_path: Path) -> None:
    tarball = _archive(tmp_path / "nameless.tar", {"index.json": _index({archive.OCI_REF_NAME: "3.10"}, {})})
    with pytest.raises(UsageError) as info:
        images.image_references(tarball)
    message = str(info.value)
    assert "nameless.tar names no image" in message
    assert archive.CONTAINERD_NAME in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ({"blobs/x": b"x"}, "no index.json"),
        ({"index.json": b"{not json"}, "index.json is not JSON"),
    ],
)
def test_a_tar_that_is_no_oci_archive_is_named_as_such(
    tmp_path: Path, members: dict[str, Any], problem: str
) -> None:
    with pytest.raises(UsageError, match=problem):
        images.image_references(_archive(tmp_path / "x.tar", members))


def test_a_file_that_is_no_tar_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot be read as an image archive"):
        images.image_references(_file(tmp_path / "x.tar", b"plain text, not a tar"))


def test_pack_names_the_image_in_full_and_keeps_the_tag(tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    _file(layout / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    _file(layout / "blobs" / "sha256" / ("0" * 64), b"{}")
    index = _index({archive.OCI_REF_NAME: "15"}, {archive.OCI_REF_NAME: "old"})
    _file(layout / "index.json", json.dumps(index).encode())
    out = tmp_path / "image.tar"
    archive.pack(layout, "15", "docker.io/fleetflow/postgresql:15", out)
    assert images.image_references(out) == ["docker.io/fleetflow/postgresql:15"]
    with tarfile.open(out) as tar:
        assert tar.getnames()[0] == "oci-layout"
        assert f"blobs/sha256/{'0' * 64}" in tar.getnames()
        assert {m.uid for m in tar.getmembers()} == {0}
        handle = tar.extractfile("index.json")
        assert handle is not None
        written = json.loads(handle.read())
    (entry,) = written["manifests"]
    assert entry["annotations"][archive.OCI_REF_NAME] == "15"
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}


# the cache in use


def test_a_cached_image_is_not_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = _file(tmp_path / "cnpg-manager", b"manager")
    plan = cloudnative_pg.plan(manager)
    _file(plan.path, b"an image built before")

    def no_commands(*args: object, **kwargs: object) -> str:
        raise AssertionError(f"nothing may run for a cached image: {args}")

    monkeypatch.setattr(commands, "run", no_commands)
    found = images.ensure_images(references=[images.CLOUDNATIVE_PG], cnpg_manager=manager)
    assert found == {images.CLOUDNATIVE_PG: plan.path}
    manager.write_bytes(b"another manager")
    with pytest.raises(AssertionError, match="nothing may run"):
        images.ensure_images(references=[images.CLOUDNATIVE_PG], cnpg_manager=manager)


def test_a_failed_build_leaves_nothing_and_a_good_one_lands_whole(own_cache: Path) -> None:
    final = own_cache / "thing-0123456789abcdef.tar"

    def failing(scratch: Path) -> Path:
        _file(scratch / "image.tar", b"half")
        raise BootstrapError("'umoci raw' failed (exit 1): disk full")

    with pytest.raises(BootstrapError, match="disk full"):
        cache.build_once("thing", final, failing)
    assert [p.name for p in own_cache.iterdir()] == [".thing.lock"]

    assert cache.build_once("thing", final, lambda scratch: _file(scratch / "image.tar", b"whole"))
    assert final.read_bytes() == b"whole"
    assert not cache.build_once("thing", final, failing), "a finished image is kept"
    assert sorted(p.name for p in own_cache.iterdir()) == [".thing.lock", final.name]


def test_unknown_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown image"):
        images.ensure_images(references=["docker.io/fleetflow/nope:1"])


# commands


def test_failing_command_names_itself_and_its_last_stderr_line() -> None:
    with pytest.raises(BootstrapError) as info:
        commands.run(["sh", "-c", "echo first >&2; echo 'the reason' >&2; exit 3"], timeout=10)
    assert str(info.value) == "'sh -c' failed (exit 3): the reason"


def test_command_that_overruns_is_stopped() -> None:
    with pytest.raises(BootstrapError, match=r"'sleep 30' did not finish within 0 s"):
        commands.run(["sleep", "30"], timeout=0.2)


def test_missing_command_is_a_bootstrap_error() -> None:
    with pytest.raises(BootstrapError, match="cannot run 'no-such-tool-here"):
        commands.run(["no-such-tool-here", "x"], timeout=5)


def test_import_command_loads_into_the_cri_namespace() -> None:
    command = images.import_command(Path("/x/pause.tar"), "/run/node/containerd.sock", ctr="/usr/bin/ctr")
    assert command[:5] == ["/usr/bin/ctr", "--address", "/run/node/containerd.sock", "--namespace", "k8s.io"]
    assert command[5:7] == ["images", "import"]
    assert command[-1] == "/x/pause.tar"


# importing, against a stand-in ctr that records its calls

FAKE_CTR = """#!/bin/sh
echo "$*" >> "$FAKE_CTR_LOG"
case "$*" in
  *"images import"*) [ -n "$FAKE_CTR_FAIL" ] && { echo "ctr: $FAKE_CTR_FAIL" >&2; exit 1; }
                     printf '%s\\n' $FAKE_CTR_IMPORTS >> "$FAKE_CTR_STATE" ;;
  *"images ls -q"*) cat "$FAKE_CTR_STATE" ;;
  *"images tag"*) for last in "$@"; do :; done; echo "$last" >> "$FAKE_CTR_STATE" ;;
esac
"""


@pytest.fixture
def fake_ctr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ctr = _file(tmp_path / "ctr", FAKE_CTR.encode())
    ctr.chmod(0o755)
    monkeypatch.setenv("FAKE_CTR_LOG", str(tmp_path / "ctr.log"))
    monkeypatch.setenv("FAKE_CTR_STATE", str(_file(tmp_path / "ctr.state", b"")))
    return ctr


def _named_archive(path: Path, name: str) -> Path:
    return _archive(path, {"index.json": _index({archive.CONTAINERD_NAME: name})})


def test_import_tags_a_short_name_with_its_full_reference(
    tmp_path: Path, fake_ctr: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CTR_IMPORTS", "fleetflow/app:2")
    tarball = _named_archive(tmp_path / "app.tar", "fleetflow/app:2")
    assert images.import_image(tarball, "/run/n1/containerd.sock", ctr=str(fake_ctr)) == [
        "docker.io/fleetflow/app:2"
    ]
    calls = (tmp_path / "ctr.log").read_text().splitlines()
    prefix = "--address /run/n1/containerd.sock --namespace k8s.io images"
    assert calls[0] == f"{prefix} import --snapshotter=overlayfs {tarball}"
    assert f"{prefix} tag --force fleetflow/app:2 docker.io/fleetflow/app:2" in calls


def test_import_that_does_not_show_the_name_fails(
    tmp_path: Path, fake_ctr: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CTR_IMPORTS", "import-2026-12-07:3.10")
    tarball = _named_archive(tmp_path / "pause.tar", "docker.io/fleetflow/pause:3.10")
    with pytest.raises(BootstrapError, match=r"docker.io/fleetflow/pause:3.10 is not in 'ctr images ls'"):
        images.import_image(tarball, "/run/n1/containerd.sock", ctr=str(fake_ctr))


def test_failing_import_names_the_command_and_ctr_s_reason(
    tmp_path: Path, fake_ctr: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CTR_FAIL", "failed to dial: connection refused")
    tarball = _named_archive(tmp_path / "pause.tar", "docker.io/fleetflow/pause:3.10")
    with pytest.raises(BootstrapError) as info:
        images.import_image(tarball, "/run/n1/containerd.sock", ctr=str(fake_ctr))
    assert str(info.value) == (
        "'ctr images import pause.tar' failed (exit 1): ctr: failed to dial: connection refused"
    )


def test_a_nameless_archive_is_refused_before_ctr_runs(tmp_path: Path, fake_ctr: Path) -> None:
    tarball = _archive(tmp_path / "x.tar", {"index.json": _index({})})
    with pytest.raises(UsageError):
        images.import_image(tarball, "/run/n1/containerd.sock", ctr=str(fake_ctr))
    assert not (tmp_path / "ctr.log").exists()
