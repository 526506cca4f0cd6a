"""The local-path provisioner's decisions: which claim gets a volume, which volume, what is released."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, cast

import pytest
from fleetflow_dev.nodes import storage

from fleetflow.kube import KubeClient

ROOT = Path("/srv/fleet/nodes")
UID = "3f2a9c0b-1d7e-4c55-9a7e-0123456789ab"


def claim(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "cluster-shop-1", "namespace": "shop", "uid": UID},
        "spec": {
            "storageClassName": "local-path",
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "volumeMode": "Filesystem",
        },
        "status": {"phase": "Pending"},
    }
    body["spec"].update(spec)
    return body


def test_the_storage_class_is_the_default_and_ours() -> None:
    sc = storage.storage_class()
    assert sc["metadata"]["name"] == "local-path"
    assert sc["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "true"}
    assert (sc["provisioner"], sc["reclaimPolicy"], sc["volumeBindingMode"]) == (
        "fleetflow.io/local-path",
        "Delete",
        "Immediate",
    )


def test_a_pending_claim_of_our_class_needs_a_volume() -> None:
    assert storage.needs_volume(claim())
    assert storage.needs_volume({**claim(), "status": {}})  # just created: no phase yet


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"spec": {"storageClassName": "other"}}, "another class"),
        ({"spec": {"storageClassName": None}}, "no class yet (the default is filled in by an event)"),
        ({"spec": {"storageClassName": ""}}, "explicitly no class"),
        ({"spec": {"volumeName": "pvc-x"}}, "a volume is named already"),
        ({"status": {"phase": "Bound"}}, "bound"),
        ({"status": {"phase": "Lost"}}, "lost"),
        ({"metadata": {"deletionTimestamp": "2026-12-07T10:00:00Z"}}, "being deleted"),
    ],
)
def test_claims_that_need_no_volume(change: dict[str, Any], why: str) -> None:
    pvc = claim()
    for part, values in change.items():
        pvc[part].update(values)
    assert not storage.needs_volume(pvc), why


def test_what_cannot_be_a_directory_is_said() -> None:
    assert storage.unsupported(claim()) is None
    assert "volumeMode Block" in str(storage.unsupported(claim(volumeMode="Block")))
    snapshot = {"kind": "VolumeSnapshot", "name": "snap", "apiGroup": "snapshot.storage.k8s.io"}
    assert "VolumeSnapshot snap" in str(storage.unsupported(claim(dataSource=snapshot)))
    assert "no storage" in str(storage.unsupported(claim(resources={})))


def test_the_volume_for_a_claim() -> None:
    pvc = claim(accessModes=["ReadWriteOnce", "ReadWriteOncePod"], resources={"requests": {"storage": "5Gi"}})
    path, pv = storage.volume_for(pvc, root=ROOT, cluster="service-cluster", node="service-cluster")
    assert path == ROOT / "service-cluster" / "volumes" / f"shop-cluster-shop-1-{UID}"
    assert pv["metadata"]["name"] == f"pvc-{UID}"
    assert pv["metadata"]["annotations"] == {"pv.kubernetes.io/provisioned-by": "fleetflow.io/local-path"}
    spec = pv["spec"]
    assert spec["capacity"] == {"storage": "5Gi"}
    assert spec["accessModes"] == ["ReadWriteOnce", "ReadWriteOncePod"]
    assert spec["persistentVolumeReclaimPolicy"] == "Delete"
    assert spec["storageClassName"] == "local-path"
    assert spec["claimRef"] == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "shop",
        "name": "cluster-shop-1",
        "uid": UID,
    }
    assert spec["hostPath"] == {"path": str(path), "type": "DirectoryOrCreate"}
    (term,) = spec["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert term == {
        "matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["service-cluster"]}
        ]
    }
    # The same claim (a replayed event) gives the same volume: nothing new is made.
    assert storage.volume_for(
        copy.deepcopy(pvc), root=ROOT, cluster="service-cluster", node="service-cluster"
    ) == (
        path,
        pv,
    )
    assert storage.owned_path({**pv, "status": {"phase": "Released"}}, ROOT, "service-cluster") == path


def test_a_long_claim_name_still_fits_a_file_name() -> None:
    pvc = claim()
    pvc["metadata"]["name"] = "n" * 253
    path = storage.volume_path(ROOT, "c", pvc)
    assert len(path.name) <= 255
    assert path.name.endswith(UID)


def released(path: str = f"{ROOT}/service-cluster/volumes/shop-x-{UID}", **spec: Any) -> dict[str, Any]:
    pv: dict[str, Any] = {
        "metadata": {
            "name": f"pvc-{UID}",
            "annotations": {"pv.kubernetes.io/provisioned-by": "fleetflow.io/local-path"},
        },
        "spec": {"persistentVolumeReclaimPolicy": "Delete", "hostPath": {"path": path}},
        "status": {"phase": "Released"},
    }
    pv["spec"].update(spec)
    return pv


def test_released_and_failed_volumes_of_ours_are_reclaimed() -> None:
    assert storage.reclaimable(released())
    assert storage.reclaimable({**released(), "status": {"phase": "Failed"}})
    assert not storage.reclaimable({**released(), "status": {"phase": "Bound"}})
    assert not storage.reclaimable({**released(), "status": {"phase": "Available"}})
    assert not storage.reclaimable(released(persistentVolumeReclaimPolicy="Retain"))
    someone_elses = released()
    someone_elses["metadata"]["annotations"] = {"pv.kubernetes.io/provisioned-by": "rancher.io/local-path"}
    assert not storage.reclaimable(someone_elses)
    assert not storage.reclaimable({**released(), "metadata": {"name": "static"}})


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/etc",
        f"{ROOT}/service-cluster/volumes",  # the volumes directory itself
        f"{ROOT}/service-cluster/volumes/../../etc",
        f"{ROOT}/service-cluster/volumes/a/b",  # not directly below
        f"{ROOT}/other-cluster/volumes/shop-x",  # another cluster's
        "service-cluster/volumes/shop-x",  # relative
        "",
    ],
)
def test_only_our_directories_are_ever_removed(path: str) -> None:
    with pytest.raises(ValueError, match=r"path|hostPath"):
        storage.owned_path(released(path), ROOT, "service-cluster")


def test_make_directory_is_writable_by_anyone_despite_the_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0o077)
    try:
        target = tmp_path / "c" / "volumes" / "v"
        storage.make_directory(target)
        storage.make_directory(target)  # again: nothing changes
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o777


def test_events_map_to_keys() -> None:
    controller = storage.Storage("service-cluster", ROOT)
    assert controller.keys("PersistentVolumeClaim", claim()) == [("pvc", "shop", "cluster-shop-1")]
    assert controller.keys("PersistentVolume", released()) == [("pv", f"pvc-{UID}")]
    assert controller.keys("StorageClass", storage.storage_class()) == [("class",)]
    assert controller.keys("StorageClass", {"metadata": {"name": "other"}}) == []


class FakeClient:
    """The few KubeClient calls the provisioner makes, on objects kept in a dict."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = {
            (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects
        }
        self.writes: list[tuple[str, str]] = []

    def get_or_none(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(("create", body["metadata"]["name"]))
        self.objects[(body["kind"], body["metadata"].get("namespace"), body["metadata"]["name"])] = body
        return body

    def apply(self, body: dict[str, Any], *, force: bool = False) -> dict[str, Any]:
        self.writes.append(("apply", body["metadata"]["name"]))
        self.objects[(body["kind"], body["metadata"].get("namespace"), body["metadata"]["name"])] = body
        return body

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        self.writes.append(("delete", name))
        return self.objects.pop((kind, namespace, name), None) is not None


def test_reconciling_a_claim_twice_makes_one_volume_and_releasing_it_twice_removes_it_once(
    tmp_path: Path,
) -> None:
    pvc = {**claim(), "kind": "PersistentVolumeClaim"}
    fake = FakeClient(pvc)
    client = cast(KubeClient, fake)
    controller = storage.Storage("c", tmp_path)
    controller.reconcile(client, ("pvc", "shop", "cluster-shop-1"))
    controller.reconcile(client, ("pvc", "shop", "cluster-shop-1"))  # a replayed event
    assert fake.writes == [("create", f"pvc-{UID}")]
    pv = fake.objects[("PersistentVolume", None, f"pvc-{UID}")]
    directory = Path(pv["spec"]["hostPath"]["path"])
    assert directory.is_dir()
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0][
        "values"
    ] == ["c"]

    pv["status"] = {"phase": "Released"}
    controller.reconcile(client, ("pv", f"pvc-{UID}"))
    controller.reconcile(client, ("pv", f"pvc-{UID}"))  # gone: nothing more
    assert fake.writes[1:] == [("delete", f"pvc-{UID}")]
    assert not directory.exists()


def test_a_released_volume_elsewhere_is_left_alone(tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    outside.mkdir()
    pv = {**released(str(outside)), "kind": "PersistentVolume"}
    fake = FakeClient(pv)
    storage.Storage("c", tmp_path / "root").reconcile(cast(KubeClient, fake), ("pv", f"pvc-{UID}"))
    assert fake.writes == []
    assert outside.is_dir()


def test_the_class_is_applied_when_missing_and_left_alone_when_right() -> None:
    fake = FakeClient()
    controller = storage.Storage("c", ROOT)
    controller.setup(cast(KubeClient, fake))
    controller.reconcile(cast(KubeClient, fake), ("class",))
    assert fake.writes == [("apply", "local-path")]
    other = {**storage.storage_class(), "provisioner": "rancher.io/local-path"}
    fake = FakeClient(other)
    controller.setup(cast(KubeClient, fake))
    assert fake.writes == [("delete", "local-path"), ("apply", "local-path")]  # immutable fields: replaced
