"""The configuration files of one node: containerd, CNI, kubelet, kube-proxy and CoreDNS.

What each setting is for (sections 7 and 7b of the shared facts, ``../shared/docs/facts.md``;
each found by something failing first):

- containerd keeps its own root, state and socket, so several nodes (and any containerd of the
  machine's own) never share images or containers; the CRI plugin restricts oom_score_adj
  (runc inside this privileged container cannot lower it), mounts pod network namespaces under
  its own state directory (so ``fleet down`` finds and unmounts every one), and runs CNI from
  Debian's plugins with this node's bridge and pod range.
- The kubelet authenticates callers by client certificate and asks the API server (webhook) who
  may do what, so ``kubectl logs`` and ``exec`` work and nobody else gets in; cgroups are plain
  cgroupfs without QoS tiers, eviction and image garbage collection are off (images are imported,
  never pulled back), and its pod logs stay in the node's own directory.
- kube-proxy in iptables mode, in the node's namespace, touches no host-wide sysctl.
- CoreDNS answers ``cluster.local`` from the API server on every address of the node's
  namespace; the CNI bridge's gateway is the pods' DNS server.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from fleetflow.files import write_atomic
from fleetflow_dev.nodes.addresses import NodeAddresses

PAUSE_IMAGE = "docker.io/fleetflow/pause:3.10"
# Short roots: a unix socket path holds at most 107 bytes, and the kubelet makes sockets deep
# in its directory (pod-resources/<10 digits>), so neither may live under a long FLEETFLOW_HOME.
RUNTIME_DIR = Path("/run/fleetflow")  # containerd's sockets
KUBELET_ROOT = Path("/var/lib/fleetflow")  # the kubelet's directory: pods' volumes, on disk


@dataclass(frozen=True)
class NodePaths:
    """Where one node keeps its state, under its cluster's directory."""

    root: Path  # <fleet>/clusters/<name>/node

    @property
    def digest(self) -> str:
        return hashlib.sha256(str(self.root).encode()).hexdigest()[:12]

    @property
    def runtime(self) -> Path:
        return RUNTIME_DIR / self.digest

    @property
    def kubelet_state(self) -> Path:
        """The kubelet's root directory; disposable: ``fleet down`` removes every pod first."""
        return KUBELET_ROOT / self.digest

    @property
    def containerd_socket(self) -> Path:
        return self.runtime / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_dir(self) -> Path:
        return self.kubelet_state / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    @property
    def corefile(self) -> Path:
        return self.root / "Corefile"

    @property
    def kubeconfig(self) -> Path:
        """The node's components' kubeconfig (the cluster's admin, at the host side of the veth)."""
        return self.root / "node.kubeconfig"


def containerd_toml(paths: NodePaths) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{paths.containerd_root}"
state = "{paths.containerd_state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{paths.containerd_socket}"

[ttrpc]
  address = "{paths.runtime / "containerd.sock.ttrpc"}"

[debug]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{paths.root / "containerd" / "opt"}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{paths.cni_conf}"
    max_conf_num = 1
"""


def cni_conflist(addresses: NodeAddresses, paths: NodePaths) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": addresses.netns,
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": addresses.pod_cidr, "gateway": addresses.pod_gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_ipam),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(addresses: NodeAddresses, paths: NodePaths, client_ca: Path) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": addresses.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "localStorageCapacityIsolation": False,
        "evictionHard": {"memory.available": "0%", "nodefs.available": "0%", "imagefs.available": "0%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [addresses.cluster_dns],
        "clusterDomain": "cluster.local",
        "resolvConf": str(paths.resolv_conf),
        "podLogsDir": str(paths.pod_logs),
        "staticPodPath": "",
        "maxPods": 110,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
    }


def kube_proxy_config(addresses: NodeAddresses, paths: NodePaths, node_name: str) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(paths.kubeconfig)},
        "hostnameOverride": node_name,
        "mode": "iptables",
        "clusterCIDR": addresses.pod_cidr,
        "bindAddress": addresses.node_ip,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # 0 leaves the kernel's conntrack settings alone (host-wide in this container).
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def corefile(paths: NodePaths, context: str) -> str:
    return f""".:53 {{
    errors
    health 127.0.0.1:8080
    ready 127.0.0.1:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {paths.kubeconfig} {context}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
"""


def write_all(addresses: NodeAddresses, paths: NodePaths, node_name: str, client_ca: Path) -> None:
    """Write every configuration file of the node (the kubeconfig is written by the caller)."""
    for directory in (paths.root, paths.cni_conf, paths.cni_ipam, paths.kubelet_dir, paths.pod_logs):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(paths.containerd_config, containerd_toml(paths))
    write_atomic(
        paths.cni_conf / "10-fleetflow.conflist", json.dumps(cni_conflist(addresses, paths), indent=2)
    )
    write_atomic(paths.kubelet_config, yaml.safe_dump(kubelet_config(addresses, paths, client_ca)))
    write_atomic(paths.kube_proxy_config, yaml.safe_dump(kube_proxy_config(addresses, paths, node_name)))
    write_atomic(paths.corefile, corefile(paths, node_name))
    # Pods with dnsPolicy Default get this; there is no upstream resolver on the fleet's network.
    write_atomic(paths.resolv_conf, f"nameserver {addresses.cluster_dns}\n")
