"""The one place that pins the versions of the local fleet's binaries.

Kubernetes 1.34 is paired with etcd 3.6.4, as upstream pairs them; helm 3.19 is built on the
same Kubernetes 1.34 libraries. CoreDNS 1.12 is the cluster DNS of the nodes; CloudNativePG
1.24.1 is the operator version of chart cloudnative-pg 0.22.1, the seed's pin. Changing a
version here makes ``fleetflow fleet bootstrap`` build the new binaries into a new cache
directory; the old ones stay untouched.
"""

from __future__ import annotations

from typing import Final

KUBERNETES: Final = "v1.34.4"
ETCD: Final = "v3.6.4"
HELM: Final = "v3.19.0"
COREDNS: Final = "v1.12.1"
CLOUDNATIVE_PG: Final = "v1.24.1"
