"""Reading a kubeconfig context into the self-contained kubeconfig fleetflow stores per cluster."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetflow.errors import ConfigError
from fleetflow.kube.kubeconfig import Kubeconfig, contexts, extract

CA, CERT, KEY = b"-----CA-----\n", b"-----CERT-----\n", b"-----SECRET KEY-----\n"
TOKEN = "secret-token-value"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "kube" / "config"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def two_clusters(tmp_path: Path) -> dict[str, Any]:
    """kubectl's usual shape: two contexts, certificates as files (one relative, one absolute)."""
    (tmp_path / "kube" / "pki").mkdir(parents=True)
    (tmp_path / "kube" / "pki" / "ca.crt").write_bytes(CA)
    (tmp_path / "client.crt").write_bytes(CERT)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "mgmt",
        "clusters": [
            {
                "name": "mgmt",
                "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority-data": b64(CA)},
            },
            {
                "name": "workload",
                "cluster": {"server": "https://127.0.0.1:7443", "certificate-authority": "pki/ca.crt"},
            },
        ],
        "users": [
            {"name": "admin", "user": {"token": TOKEN}},
            {
                "name": "workload-admin",
                "user": {"client-certificate": str(tmp_path / "client.crt"), "client-key-data": b64(KEY)},
            },
        ],
        "contexts": [
            {"name": "mgmt", "context": {"cluster": "mgmt", "user": "admin"}},
            {
                "name": "workload",
                "context": {"cluster": "workload", "user": "workload-admin", "namespace": "apps"},
            },
        ],
    }


def test_a_context_becomes_a_kubeconfig_of_its_own(tmp_path: Path, two_clusters: dict[str, Any]) -> None:
    path = write(tmp_path, two_clusters)
    extracted = extract(path, "workload")
    assert extracted["current-context"] == "workload"
    assert extracted["contexts"] == [
        {
            "name": "workload",
            "context": {"cluster": "workload", "user": "workload-admin", "namespace": "apps"},
        }
    ]
    assert [c["name"] for c in extracted["clusters"]] == ["workload"]
    assert [u["name"] for u in extracted["users"]] == ["workload-admin"]
    assert TOKEN not in yaml.safe_dump(extracted), "another context's credentials must not come along"


def test_certificate_files_are_embedded_relative_to_the_kubeconfig(
    tmp_path: Path, two_clusters: dict[str, Any]
) -> None:
    extracted = extract(write(tmp_path, two_clusters), "workload")
    cluster, user = extracted["clusters"][0]["cluster"], extracted["users"][0]["user"]
    assert cluster == {"server": "https://127.0.0.1:7443", "certificate-authority-data": b64(CA)}
    assert user == {"client-certificate-data": b64(CERT), "client-key-data": b64(KEY)}


def test_the_stored_kubeconfig_works_without_the_original_files(
    tmp_path: Path, two_clusters: dict[str, Any]
) -> None:
    kubeconfig = Kubeconfig.from_file(write(tmp_path, two_clusters), "workload")
    (tmp_path / "kube" / "pki" / "ca.crt").unlink()
    (tmp_path / "client.crt").unlink()
    again = Kubeconfig.from_yaml(kubeconfig.to_yaml(), "workload/workload-kubeconfig")
    assert again.context == "workload"
    assert again.server == "https://127.0.0.1:7443"
    assert again.data == kubeconfig.data


def test_the_file_is_read_not_changed(tmp_path: Path, two_clusters: dict[str, Any]) -> None:
    path = write(tmp_path, two_clusters)
    before = path.read_text()
    extract(path, "workload")
    assert path.read_text() == before


def test_a_kubeconfig_never_shows_its_credentials(tmp_path: Path, two_clusters: dict[str, Any]) -> None:
    kubeconfig = Kubeconfig.from_file(write(tmp_path, two_clusters), "mgmt")
    assert repr(kubeconfig) == str(kubeconfig) == "Kubeconfig(context='mgmt', credentials=<hidden>)"
    assert TOKEN in kubeconfig.to_yaml()


def test_contexts_lists_the_names(tmp_path: Path, two_clusters: dict[str, Any]) -> None:
    assert contexts(write(tmp_path, two_clusters)) == ["mgmt", "workload"]


def test_an_unknown_context_names_the_ones_there_are(tmp_path: Path, two_clusters: dict[str, Any]) -> None:
    path = write(tmp_path, two_clusters)
    with pytest.raises(
        ConfigError,
        match=rf"^context 'nope' not found in kubeconfig {re.escape(str(path))}; it has: mgmt, workload$",
    ):
        extract(path, "nope")


def broken(config: dict[str, Any], change: str) -> dict[str, Any]:
    if change == "no user":
        del config["contexts"][1]["context"]["user"]
    elif change == "missing cluster":
        config["clusters"] = config["clusters"][:1]
    elif change == "missing user":
        config["users"] = config["users"][:1]
    elif change == "no server":
        del config["clusters"][1]["cluster"]["server"]
    return config


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("no user", "context 'workload' lacks cluster or user"),
        ("missing cluster", "no cluster named 'workload'"),
        ("missing user", "no user named 'workload-admin'"),
        ("no server", "cluster 'workload' has no server"),
    ],
)
def test_a_malformed_kubeconfig_says_what_is_missing(
    tmp_path: Path, two_clusters: dict[str, Any], change: str, says: str
) -> None:
    path = write(tmp_path, broken(two_clusters, change))
    with pytest.raises(ConfigError, match=f"^kubeconfig {re.escape(str(path))} is malformed: {says}$"):
        extract(path, "workload")


def test_an_unreadable_certificate_file_is_named(tmp_path: Path, two_clusters: dict[str, Any]) -> None:
    ca = tmp_path / "kube" / "pki" / "ca.crt"
    ca.unlink()
    said = f"^kubeconfig refers to certificate-authority file {re.escape(str(ca))}, which cannot be read$"
    with pytest.raises(ConfigError, match=said):
        extract(write(tmp_path, two_clusters), "workload")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (f"users: [{{name: x, user: {{token: {TOKEN}}}}}\n", "is not valid YAML"),
        ("just text\n", "is malformed: no list of contexts"),
        ("contexts: {}\n", "is malformed: no list of contexts"),
    ],
)
def test_a_file_that_is_not_a_kubeconfig_is_refused_without_quoting_it(
    tmp_path: Path, content: str, says: str
) -> None:
    path = tmp_path / "config"
    path.write_text(content)
    with pytest.raises(ConfigError, match=f"^kubeconfig {re.escape(str(path))} {says}") as info:
        extract(path, "mgmt")
    assert TOKEN not in str(info.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=f"^kubeconfig {re.escape(str(tmp_path / 'absent'))} does not exist$"
    ):
        extract(tmp_path / "absent", "mgmt")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("apiVersion: v1\nkind: Config\n", "stored kubeconfig wl/wl-kubeconfig has no current-context"),
        ("clusters: [\n", "stored kubeconfig wl/wl-kubeconfig is not valid YAML"),
    ],
)
def test_a_broken_stored_kubeconfig_names_where_it_is_stored(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=f"^{says}$"):
        Kubeconfig.from_yaml(text, "wl/wl-kubeconfig")
