"""A request's credentials: read from the service cluster, written next to the request.

The source is CloudNativePG's ``<cluster>-app`` Secret and the Cluster's LoadBalancer address on
the service cluster; the target is the Secret ``secretName`` in the request's namespace on the
workload cluster, owned by the request (keys ``username``/``user``, ``password``, ``host``,
``port``, ``dbname``, ``uri``). It goes straight from one to the other, never through the
management cluster, and is rewritten only when the source Secret or the address changed (the
target carries both in an annotation).
"""

from __future__ import annotations

import base64
from urllib.parse import quote

from fleetflow.databases import crd, provision
from fleetflow.databases.names import MANAGED, SOURCE_ANNOTATION
from fleetflow.databases.secrets import Credentials, Delivered, app_credentials
from fleetflow.databases.spec import RequestRef
from fleetflow.databases.views import DatabaseObject, Endpoint
from fleetflow.errors import PermanentError
from fleetflow.kube import KubeClient


def read(service: KubeClient, placed: provision.Placed) -> tuple[Credentials, Endpoint]:
    """The Cluster's credentials and address; PermanentError when either is missing."""
    secret = service.get("v1", "Secret", placed.app_secret, placed.namespace)
    creds = app_credentials(secret, placed.service_cluster)
    lb = provision.load_balancer(service, placed)
    if lb is None or lb.endpoint is None:
        raise PermanentError(f"Cluster {placed} on {placed.service_cluster} has no LoadBalancer address")
    return creds, lb.endpoint


def write(
    workload: KubeClient,
    ref: RequestRef,
    db: DatabaseObject,
    database: str,
    creds: Credentials,
    endpoint: Endpoint,
) -> bool:
    """Write the credentials Secret next to the request; False when it is already current."""
    secret_name = db.secret_name
    source = f"{creds.source}@{endpoint}"
    current = Delivered.of(workload.get_or_none("v1", "Secret", secret_name, ref.namespace))
    if current is not None and current.source == source:
        return False
    dbname = creds.dbname or database
    login = f"{quote(creds.user, safe='')}:{quote(creds.password, safe='')}"
    data = {
        "username": creds.user,
        "user": creds.user,
        "password": creds.password,
        "host": endpoint.host,
        "port": str(endpoint.port),
        "dbname": dbname,
        "uri": f"postgresql://{login}@{endpoint.host}:{endpoint.port}/{dbname}",
    }
    workload.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/basic-auth",
            "metadata": {
                "name": secret_name,
                "namespace": ref.namespace,
                "labels": {**MANAGED, "fleetflow.io/database": ref.name},
                "annotations": {SOURCE_ANNOTATION: source},
                "ownerReferences": [
                    {
                        "apiVersion": crd.API_VERSION,
                        "kind": crd.KIND,
                        "name": ref.name,
                        "uid": db.meta.uid,
                        "blockOwnerDeletion": False,
                    }
                ],
            },
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
        force=True,
    )
    return True
