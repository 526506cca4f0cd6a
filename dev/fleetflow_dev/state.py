"""The local fleet's state file: which clusters exist, their ports and their processes' pids.

One JSON file under ``$FLEETFLOW_HOME/fleet``; written atomically, so a crash while writing it
leaves the previous state, never a torn one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fleetflow.errors import FleetError
from fleetflow.files import write_atomic

PROCESSES = ("etcd", "kube-apiserver", "kube-controller-manager")


@dataclass
class ClusterRecord:
    name: str
    etcd_port: int = 0
    etcd_peer_port: int = 0
    api_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)
    node_index: int = 0  # 0: no node; else the node's addresses (fleetflow_dev.nodes.addresses)

    @property
    def address(self) -> str:
        """Where the API server listens: loopback, or with a node the host side of its veth."""
        return f"172.30.{self.node_index}.1" if self.node_index else "127.0.0.1"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.api_port}"


@dataclass
class FleetState:
    clusters: dict[str, ClusterRecord] = field(default_factory=dict)
    standin_pid: int = 0  # the local CloudNativePG stand-in controller
    controllers_pid: int = 0  # the nodes' volume provisioner and LoadBalancer allocator

    @classmethod
    def load(cls, path: Path) -> FleetState:
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text())
            clusters = {name: ClusterRecord(**rec) for name, rec in raw.get("clusters", {}).items()}
            standin = int(raw.get("standin_pid", 0))
            controllers = int(raw.get("controllers_pid", 0))
        except (ValueError, TypeError) as exc:
            raise FleetError(
                f"fleet state {path} is unreadable ({exc}); run 'fleetflow fleet down' "
                "and remove it to start over"
            ) from exc
        return cls(clusters, standin, controllers)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "clusters": {name: asdict(rec) for name, rec in sorted(self.clusters.items())},
            "standin_pid": self.standin_pid,
            "controllers_pid": self.controllers_pid,
        }
        write_atomic(path, json.dumps(body, indent=2) + "\n")
