"""Certificates, kubeconfig and state files of the local fleet."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fleetflow_dev import kubeconfig, pki
from fleetflow_dev.manager import validate_names
from fleetflow_dev.state import ClusterRecord, FleetState

from fleetflow.errors import FleetError, UsageError


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_pki_gives_an_admin_in_system_masters_and_a_loopback_serving_cert(tmp_path: Path) -> None:
    keys = pki.ensure(tmp_path / "pki", "mgmt")
    admin = _cert(keys.admin_cert)
    org = admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    assert org == "system:masters"
    assert admin.issuer == _cert(keys.client_ca).subject
    eku = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku

    serving = _cert(keys.serving_cert)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    serving.verify_directly_issued_by(_cert(keys.serving_ca))
    for private in (keys.admin_key, keys.serving_key, keys.sa_key, keys.client_ca_key, keys.serving_ca_key):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private


def test_pki_is_kept_across_restarts(tmp_path: Path) -> None:
    first = pki.ensure(tmp_path / "pki", "mgmt").admin_cert.read_bytes()
    assert pki.ensure(tmp_path / "pki", "mgmt").admin_cert.read_bytes() == first


def test_kubeconfig_has_one_context_per_cluster_named_after_it(tmp_path: Path) -> None:
    entries = []
    for name in ("mgmt", "service-cluster"):
        keys = pki.ensure(tmp_path / name, name)
        entries.append(
            kubeconfig.Entry(
                name, f"https://127.0.0.1:{len(name)}", keys.serving_ca, keys.admin_cert, keys.admin_key
            )
        )
    path = tmp_path / "out" / "kubeconfig"
    kubeconfig.write(path, entries, current="mgmt")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = yaml.safe_load(path.read_text())
    assert [c["name"] for c in loaded["contexts"]] == ["mgmt", "service-cluster"]
    assert loaded["current-context"] == "mgmt"
    ca = base64.b64decode(loaded["clusters"][1]["cluster"]["certificate-authority-data"])
    assert ca == entries[1].ca.read_bytes()


def test_state_round_trips_and_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = FleetState({"mgmt": ClusterRecord("mgmt", 1, 2, 3, {"etcd": 42})})
    state.save(path)
    assert FleetState.load(path) == state
    assert json.loads(path.read_text())["clusters"]["mgmt"]["api_port"] == 3
    path.write_text("{not json")
    with pytest.raises(FleetError, match="unreadable"):
        FleetState.load(path)


@pytest.mark.parametrize("bad", ["Mgmt", "my_cluster", "-x", "a" * 64, ""])
def test_cluster_names_must_be_dns_labels(bad: str) -> None:
    with pytest.raises(UsageError):
        validate_names([bad])


def test_duplicate_names_collapse() -> None:
    assert validate_names(["a", "b", "a"]) == ["a", "b"]
