"""A node's address plan and configuration files: what keeps clusters apart and callers checked."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from fleetflow_dev import pki
from fleetflow_dev.nodes import config
from fleetflow_dev.nodes.addresses import MAX_INDEX, NodeAddresses


def test_two_nodes_share_no_range() -> None:
    a, b = NodeAddresses(1), NodeAddresses(2)
    ranges_a = [a.link_cidr, a.pod_cidr, a.service_cidr, a.loadbalancer_cidr]
    ranges_b = [b.link_cidr, b.pod_cidr, b.service_cidr, b.loadbalancer_cidr]
    for left in ranges_a:
        for right in ranges_b:
            assert not ipaddress.ip_network(left).overlaps(ipaddress.ip_network(right)), (left, right)
    assert a.netns != b.netns
    assert a.host_link != b.host_link


def test_every_range_is_private_and_the_pool_is_inside_its_range() -> None:
    a = NodeAddresses(MAX_INDEX)
    for cidr in (a.link_cidr, a.pod_cidr, a.service_cidr, a.loadbalancer_cidr):
        assert ipaddress.ip_network(cidr).is_private, cidr
    pool = a.loadbalancer_pool()
    assert len(pool) == 254
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(a.loadbalancer_cidr) for ip in pool)
    assert ipaddress.ip_address(a.kubernetes_service_ip) in ipaddress.ip_network(a.service_cidr)


@pytest.mark.parametrize("index", [0, MAX_INDEX + 1])
def test_an_index_outside_the_plan_is_refused(index: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        NodeAddresses(index)


def test_the_kubelet_checks_every_caller(tmp_path: Path) -> None:
    a = NodeAddresses(3)
    paths = config.NodePaths(tmp_path / "node")
    kubelet = config.kubelet_config(a, paths, tmp_path / "client-ca.crt")
    assert kubelet["authentication"] == {
        "anonymous": {"enabled": False},
        "webhook": {"enabled": True},
        "x509": {"clientCAFile": str(tmp_path / "client-ca.crt")},
    }
    assert kubelet["authorization"] == {"mode": "Webhook"}
    assert kubelet["readOnlyPort"] == 0
    assert kubelet["address"] == a.node_ip
    assert kubelet["clusterDNS"] == [a.pod_gateway]


def test_node_files_stay_under_the_node_and_sockets_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("x" * 150) / "node"
    # The deepest sockets, whatever the home's length: containerd's, and the kubelet's
    # pod-resources/<10 digits>.
    assert len(str(config.NodePaths(deep).containerd_socket)) < 100
    assert len(str(config.NodePaths(deep).kubelet_dir / "pod-resources" / ("9" * 10))) < 100
    monkeypatch.setattr(config, "RUNTIME_DIR", tmp_path / "run")
    monkeypatch.setattr(config, "KUBELET_ROOT", tmp_path / "lib")
    a = NodeAddresses(4)
    paths = config.NodePaths(deep)
    config.write_all(a, paths, "svc", tmp_path / "ca.crt")
    assert (
        len(str(config.NodePaths(Path("/root") / ("x" * 150)).containerd_socket)) < 100
    )  # a unix socket path holds at most 107 bytes
    conflist = json.loads((paths.cni_conf / "10-fleetflow.conflist").read_text())
    ipam = conflist["plugins"][0]["ipam"]
    assert ipam["ranges"] == [[{"subnet": a.pod_cidr, "gateway": a.pod_gateway}]]
    assert ipam["dataDir"].startswith(str(deep))
    toml = paths.containerd_config.read_text()
    assert f'root = "{paths.containerd_root}"' in toml
    assert "restrict_oom_score_adj = true" in toml
    assert "netns_mounts_under_state_dir = true" in toml
    proxy = yaml.safe_load(paths.kube_proxy_config.read_text())
    assert proxy["clusterCIDR"] == a.pod_cidr
    assert proxy["conntrack"]["maxPerCore"] == 0
    assert paths.runtime != config.NodePaths(tmp_path / "other").runtime


def _ips(cert: Path) -> set[str]:
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    sans = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


def test_a_node_address_reissues_the_serving_certificate_under_the_same_ca(tmp_path: Path) -> None:
    keys = pki.ensure(tmp_path / "pki", "c1")
    ca_before = keys.serving_ca.read_bytes()
    admin_before = keys.admin_cert.read_bytes()
    assert "172.30.5.1" not in _ips(keys.serving_cert)
    pki.ensure(tmp_path / "pki", "c1", ("172.30.5.1", "10.105.0.1"))
    assert {"172.30.5.1", "10.105.0.1", "127.0.0.1"} <= _ips(keys.serving_cert)
    assert keys.serving_ca.read_bytes() == ca_before  # kubeconfigs naming this CA stay valid
    assert keys.admin_cert.read_bytes() == admin_before
    again = keys.serving_cert.read_bytes()
    pki.ensure(tmp_path / "pki", "c1", ("172.30.5.1",))
    assert keys.serving_cert.read_bytes() == again  # covered already: nothing reissued
