"""RBAC on a cluster's namespace grants a team its cluster's record and credentials, nothing else.

The README's claim, checked by the management cluster's own RBAC authorizer: two teams'
clusters are registered, their credentials delivered where fetch-credentials delivers them
(``pg-credentials`` in the cluster's namespace), and each team gets a ServiceAccount bound to the
read-only Role the README documents. The test then speaks as each team with a real token from
the TokenRequest API, as a team's kubectl would.
"""

from __future__ import annotations

import base64
import secrets
import ssl
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from fleetflow_dev.pki import ClusterPKI

from fleetflow.databases import delivery
from fleetflow.databases.names import CREDENTIALS_SECRET, LOADBALANCER_CONFIGMAP
from fleetflow.databases.secrets import Credentials
from fleetflow.databases.views import Endpoint
from fleetflow.kube import Kubeconfig
from fleetflow.registry import Registry
from fleetflow.registry.crd import kubeconfig_secret_name
from fleetflow.supervisor.readiness import tls_context
from fleetflow.watcher import STATE_NAMESPACE
from tests.support.dbaas_support import FLEETFLOW
from tests.support.local_fleet import LocalFleet

pytestmark = [pytest.mark.integration, pytest.mark.security]

TEAMS = {"rbac-team-a": "workload-cluster", "rbac-team-b": "service-cluster"}  # cluster -> context
FC = "/apis/fleetflow.io/v1alpha1"

# What a platform engineer applies for a team (the README documents the same manifest).
TEAM_ACCESS = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: team, namespace: CLUSTER}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: fleetflow-team, namespace: CLUSTER}
rules:
- apiGroups: [fleetflow.io]
  resources: [fleetclusters]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [secrets, configmaps]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: fleetflow-team, namespace: CLUSTER}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: fleetflow-team}
subjects:
- {kind: ServiceAccount, name: team, namespace: CLUSTER}
"""


def _server(local_fleet: LocalFleet) -> str:
    config = yaml.safe_load(local_fleet.kubeconfig.read_text())
    return str(next(c["cluster"]["server"] for c in config["clusters"] if c["name"] == "mgmt"))


@pytest.fixture(scope="module")
def teams(local_fleet: LocalFleet) -> Iterator[dict[str, httpx.Client]]:
    """Each team's cluster registered with credentials delivered, and an API client speaking as the team."""
    mgmt = local_fleet.client("mgmt")
    registry = Registry(mgmt)
    registry.install()
    keys = ClusterPKI(local_fleet.fleet.paths("mgmt").pki)
    server = _server(local_fleet)
    admin = httpx.Client(
        base_url=server, verify=tls_context(keys.serving_ca, keys.admin_cert, keys.admin_key)
    )
    clients: dict[str, httpx.Client] = {}
    try:
        started = time.monotonic()
        for cluster, context in TEAMS.items():
            registry.ensure_namespace(cluster)
            registry.store_kubeconfig(cluster, Kubeconfig.from_file(local_fleet.kubeconfig, context))
            registry.apply(cluster, context, {"team": cluster})
            # Where fetch-credentials delivers by default: namespace <cluster> of the management cluster.
            delivered = Credentials("app", "app", "test", secrets.token_urlsafe(24))
            delivery.publish(mgmt, cluster, delivered, Endpoint("127.0.0.1", 5432))
            for obj in yaml.safe_load_all(TEAM_ACCESS.replace("CLUSTER", cluster)):
                mgmt.apply(obj)
            token = admin.post(
                f"/api/v1/namespaces/{cluster}/serviceaccounts/team/token",
                json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
            )
            assert token.status_code == 201, token.text
            clients[cluster] = httpx.Client(
                base_url=server,
                verify=ssl.create_default_context(cafile=str(keys.serving_ca)),
                headers={"Authorization": f"Bearer {token.json()['status']['token']}"},
            )
        took = time.monotonic() - started
        print(f"two teams registered, credentials delivered, Role bound, tokens issued: {took:.1f} s")
        yield clients
    finally:
        for client in (admin, *clients.values()):
            client.close()
        for cluster in TEAMS:
            registry.deregister(cluster, delete_namespace=True)


def _status(client: httpx.Client, path: str, **params: Any) -> int:
    return client.get(path, params=params).status_code


@pytest.mark.parametrize(("own", "other"), [("rbac-team-a", "rbac-team-b"), ("rbac-team-b", "rbac-team-a")])
def test_a_team_reads_its_cluster_and_credentials_and_nothing_else(
    teams: dict[str, httpx.Client], own: str, other: str
) -> None:
    team = teams[own]
    started = time.monotonic()
    who = team.post(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert who.json()["status"]["userInfo"]["username"] == f"system:serviceaccount:{own}:team", who.text

    # Its own: the FleetCluster, its kubeconfig, the delivered credentials and address, listed and watched.
    record = team.get(f"{FC}/namespaces/{own}/fleetclusters/{own}")
    assert record.status_code == 200, record.text
    assert record.json()["metadata"]["labels"] == {"team": own}
    listed = team.get(f"{FC}/namespaces/{own}/fleetclusters").json()
    assert [i["metadata"]["name"] for i in listed["items"]] == [own]
    password = team.get(f"/api/v1/namespaces/{own}/secrets/{CREDENTIALS_SECRET}")
    assert password.status_code == 200, password.text
    assert base64.b64decode(password.json()["data"]["password"])
    kubeconfig = team.get(f"/api/v1/namespaces/{own}/secrets/{kubeconfig_secret_name(own)}")
    assert kubeconfig.status_code == 200, kubeconfig.text
    assert _status(team, f"/api/v1/namespaces/{own}/configmaps/{LOADBALANCER_CONFIGMAP}") == 200
    assert _status(team, f"/api/v1/namespaces/{own}/secrets", watch="1", timeoutSeconds="1") == 200

    # Read-only: it cannot relabel its cluster nor rewrite its credentials.
    relabel = team.patch(
        f"{FC}/namespaces/{own}/fleetclusters/{own}",
        json={"metadata": {"labels": {"postgres": "required"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert relabel.status_code == 403, relabel.text
    assert team.delete(f"/api/v1/namespaces/{own}/secrets/{CREDENTIALS_SECRET}").status_code == 403

    # The other team's record and credentials, and anything cluster-wide or fleetflow's own: 403.
    denied = {
        f"{FC}/namespaces/{other}/fleetclusters/{other}",
        f"{FC}/namespaces/{other}/fleetclusters",
        f"/api/v1/namespaces/{other}/secrets/{CREDENTIALS_SECRET}",
        f"/api/v1/namespaces/{other}/secrets/{kubeconfig_secret_name(other)}",
        f"/api/v1/namespaces/{other}/secrets",
        f"/api/v1/namespaces/{other}/configmaps/{LOADBALANCER_CONFIGMAP}",
        f"{FC}/fleetclusters",
        "/api/v1/secrets",
        f"/api/v1/namespaces/{STATE_NAMESPACE}/configmaps",
        "/api/v1/namespaces/kube-system/secrets",
    }
    answered = {path: _status(team, path) for path in sorted(denied)}
    assert {p: s for p, s in answered.items() if s != 403} == {}, answered
    took = time.monotonic() - started
    print(f"{own}: {9 + len(denied)} requests authorised or refused by the API server in {took:.2f} s")


@pytest.mark.parametrize("name", ["kube-system", "fleetflow-system"])
def test_a_cluster_cannot_take_a_namespace_kubernetes_or_fleetflow_keeps(
    local_fleet: LocalFleet, registry_env: dict[str, str], name: str
) -> None:
    """RBAC on such a namespace would grant a team far more than its cluster: the name is refused."""
    done = subprocess.run(
        [FLEETFLOW, "cluster", "register", name, "--context", "workload-cluster"],
        env=registry_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"invalid cluster name '{name}'" in done.stderr
    mgmt = local_fleet.client("mgmt")
    assert mgmt.get_or_none("fleetflow.io/v1alpha1", "FleetCluster", name, name) is None
    assert mgmt.get_or_none("v1", "Secret", kubeconfig_secret_name(name), name) is None
