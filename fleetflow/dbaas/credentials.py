"""Copy a database's credentials and address to whoever consumes them, and only when they changed.

The source is CNPG's ``<cluster>-app`` secret and the LoadBalancer Service on the service
cluster; the targets are the seed's Secret ``pg-credentials`` (keys ``user``, ``password``) and
ConfigMap ``pg-loadbalancer-data`` (keys ``external-ip``, ``port``). The copied Secret carries
the source's uid and resourceVersion in an annotation: a rotated password changes them, so the
next run rewrites; an unchanged source writes nothing.

:class:`Credentials` holds the password in memory only and never shows it in a repr.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetflow import templating
from fleetflow.dbaas.names import CREDENTIALS_SECRET, LOADBALANCER_CONFIGMAP, MANAGED, SOURCE_ANNOTATION
from fleetflow.dbaas.provision import Database, Endpoint, load_balancer
from fleetflow.errors import PermanentError
from fleetflow.kube import KubeClient


@dataclass(frozen=True)
class Credentials:
    user: str
    dbname: str
    source: str  # "<service-cluster>/<namespace>/<secret>@<uid>/<resourceVersion>"
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, dbname={self.dbname!r}, password=<hidden>)"


def _decode(data: dict[str, str], key: str) -> str:
    return base64.b64decode(data[key]).decode()


def read(service: KubeClient, db: Database) -> tuple[Credentials, Endpoint]:
    secret = service.get("v1", "Secret", db.app_secret, db.namespace)
    data = secret.get("data") or {}
    if "password" not in data or not ({"username", "user"} & data.keys()):
        raise PermanentError(
            f"secret {db.namespace}/{db.app_secret} on {db.service_cluster} lacks username/password"
        )
    meta = secret["metadata"]
    creds = Credentials(
        user=_decode(data, "username" if "username" in data else "user"),
        dbname=_decode(data, "dbname") if "dbname" in data else "",
        source=f"{db.service_cluster}/{db.namespace}/{db.app_secret}@{meta['uid']}/{meta['resourceVersion']}",
        password=_decode(data, "password"),
    )
    _, endpoint = load_balancer(service, db)
    if endpoint is None:
        raise PermanentError(
            f"Cluster {db.namespace}/{db.name} on {db.service_cluster} has no LoadBalancer address"
        )
    return creds, endpoint


def delivered_source(target: KubeClient, namespace: str) -> str | None:
    secret = target.get_or_none("v1", "Secret", CREDENTIALS_SECRET, namespace)
    return ((secret or {}).get("metadata", {}).get("annotations") or {}).get(SOURCE_ANNOTATION)


def publish(
    target: KubeClient,
    namespace: str,
    creds: Credentials,
    endpoint: Endpoint,
    template_dir: Path | None = None,
) -> bool:
    """Write pg-credentials and pg-loadbalancer-data into ``namespace``; False if already current."""
    config = target.get_or_none("v1", "ConfigMap", LOADBALANCER_CONFIGMAP, namespace)
    address = (config or {}).get("data") or {}
    wanted = {"external-ip": endpoint.host, "port": str(endpoint.port)}
    if creds.dbname:
        wanted["dbname"] = creds.dbname
    current = address == wanted
    if current and delivered_source(target, namespace) == creds.source:
        return False
    if target.get_or_none("v1", "Namespace", namespace) is None:
        target.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": MANAGED}}
        )
    labels = dict(MANAGED)
    objects: list[dict[str, Any]] = [
        *templating.render(
            "pg-credentials.yaml.j2",
            {"namespace": namespace, "user": creds.user, "password": creds.password, "labels": labels},
            template_dir,
        ),
        *templating.render(
            "pg-loadbalancer-data.yaml.j2",
            {
                "namespace": namespace,
                "external_ip": endpoint.host,
                "port": endpoint.port,
                "dbname": creds.dbname,
                "labels": labels,
            },
            template_dir,
        ),
    ]
    for obj in objects:
        if obj["kind"] == "Secret":
            obj["metadata"].setdefault("annotations", {})[SOURCE_ANNOTATION] = creds.source
        target.apply(obj)
    return True


def same_secret(source: str, other: str) -> bool:
    """Whether two sources name one Secret (service cluster, name and uid), in any version."""
    return bool(source) and source.rpartition("/")[0] == other.rpartition("/")[0]


def refresh(target: KubeClient, namespace: str, creds: Credentials, endpoint: Endpoint) -> bool:
    """Rewrite a copy delivered earlier into ``namespace`` from the same Secret when it is stale
    (a rotated password); False when there is no such copy or it is current."""
    source = delivered_source(target, namespace)
    if not source or not same_secret(source, creds.source):
        return False
    return publish(target, namespace, creds, endpoint)


def withdraw(target: KubeClient, namespace: str) -> bool:
    gone = target.delete("v1", "Secret", CREDENTIALS_SECRET, namespace)
    return target.delete("v1", "ConfigMap", LOADBALANCER_CONFIGMAP, namespace) or gone


def read_published(target: KubeClient, namespace: str) -> tuple[Credentials, Endpoint] | None:
    """The credentials a previous delivery wrote into ``namespace``, if any."""
    secret = target.get_or_none("v1", "Secret", CREDENTIALS_SECRET, namespace)
    config = target.get_or_none("v1", "ConfigMap", LOADBALANCER_CONFIGMAP, namespace)
    if not secret or not config:
        return None
    data, address = secret.get("data") or {}, config.get("data") or {}
    source = (secret["metadata"].get("annotations") or {}).get(SOURCE_ANNOTATION, "")
    creds = Credentials(
        user=_decode(data, "user"),
        dbname=address.get("dbname", ""),
        source=source,
        password=_decode(data, "password"),
    )
    return creds, Endpoint(address["external-ip"], int(address["port"]))
