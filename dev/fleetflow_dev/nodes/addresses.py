"""The address plan of the local fleet's nodes: every range derives from a cluster's node index.

A cluster with a node gets an index ``i`` (1..99), unique on this machine, and with it:

- a veth pair ``ffh<i>`` (host, ``172.30.i.1/24``) and ``ffn<i>`` (the node, ``172.30.i.2/24``);
  the API server listens on the host side, the kubelet and kube-proxy live on the node side;
- the pod range ``10.99.i.0/24`` on the node's CNI bridge (gateway ``10.99.i.1``, where the
  node's CoreDNS answers);
- the service range ``10.(100+i).0.0/16`` (``10.(100+i).0.1`` is the ``kubernetes`` Service);
- the LoadBalancer range ``172.31.i.0/24``, which the fleet's allocator hands out.

All of it lives on links and in namespaces the fleet creates on this machine; the host routes
the pod and LoadBalancer ranges to the node's side of the veth, and the node routes only the
fleet's ranges back to the host (no default route), so traffic never leaves the machine.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

MAX_INDEX = 99
FLEET_RANGES = ("172.30.0.0/16", "172.31.0.0/16", "10.99.0.0/16")  # what nodes route to the host


@dataclass(frozen=True)
class NodeAddresses:
    index: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= MAX_INDEX:
            raise ValueError(f"node index {self.index} outside 1..{MAX_INDEX}")

    @property
    def netns(self) -> str:
        return f"ff-node{self.index}"

    @property
    def host_link(self) -> str:
        return f"ffh{self.index}"

    @property
    def node_link(self) -> str:
        return f"ffn{self.index}"

    @property
    def host_ip(self) -> str:
        """Where the API server listens (and the node's route back to the host)."""
        return f"172.30.{self.index}.1"

    @property
    def node_ip(self) -> str:
        """The node's InternalIP: the kubelet's address for logs, exec and port-forward."""
        return f"172.30.{self.index}.2"

    @property
    def link_cidr(self) -> str:
        return f"172.30.{self.index}.0/24"

    @property
    def pod_cidr(self) -> str:
        return f"10.99.{self.index}.0/24"

    @property
    def pod_gateway(self) -> str:
        """The CNI bridge's address: pods' default gateway, and cluster DNS."""
        return f"10.99.{self.index}.1"

    @property
    def service_cidr(self) -> str:
        return f"10.{100 + self.index}.0.0/16"

    @property
    def kubernetes_service_ip(self) -> str:
        return f"10.{100 + self.index}.0.1"

    @property
    def cluster_dns(self) -> str:
        return self.pod_gateway

    @property
    def loadbalancer_cidr(self) -> str:
        return f"172.31.{self.index}.0/24"

    def loadbalancer_pool(self) -> list[str]:
        """The addresses the allocator may hand out, in order (.1 to .254)."""
        return [str(ip) for ip in ipaddress.ip_network(self.loadbalancer_cidr).hosts()]
