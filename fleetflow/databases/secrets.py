"""Typed views of the Secrets the database domain reads: CloudNativePG's ``<cluster>-app``
Secret (the source of every delivery) and the copies fleetflow delivered.

:class:`Credentials` holds the password in memory only and never shows it in a repr; a
:class:`Delivered` copy says only where it came from (its source annotation), never the value.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetflow.databases.names import SOURCE_ANNOTATION
from fleetflow.databases.views import Endpoint, Meta
from fleetflow.errors import PermanentError


@dataclass(frozen=True)
class Credentials:
    user: str
    dbname: str
    source: str  # "<service-cluster>/<namespace>/<secret>@<uid>/<resourceVersion>"
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, dbname={self.dbname!r}, password=<hidden>)"


def _data(secret: Mapping[str, Any]) -> dict[str, str]:
    data = secret.get("data")
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, Mapping) else {}


def _decode(data: Mapping[str, str], key: str) -> str:
    return base64.b64decode(data[key]).decode()


def app_credentials(secret: Mapping[str, Any], service_cluster: str) -> Credentials:
    """The user, password and database name of CloudNativePG's ``-app`` Secret; PermanentError
    (naming the Secret, not its values) when it lacks them."""
    meta, data = Meta.of(secret), _data(secret)
    where = f"{meta.namespace}/{meta.name}"
    if "password" not in data or not ({"username", "user"} & data.keys()):
        raise PermanentError(f"secret {where} on {service_cluster} lacks username/password")
    return Credentials(
        user=_decode(data, "username" if "username" in data else "user"),
        dbname=_decode(data, "dbname") if "dbname" in data else "",
        source=f"{service_cluster}/{where}@{meta.uid}/{meta.resource_version}",
        password=_decode(data, "password"),
    )


@dataclass(frozen=True)
class Delivered:
    """A copy fleetflow wrote: where it came from (the source's annotation), or "" if unknown."""

    source: str

    @classmethod
    def of(cls, secret: Mapping[str, Any] | None) -> Delivered | None:
        if secret is None:
            return None
        return cls(Meta.of(secret).annotations.get(SOURCE_ANNOTATION, ""))


def address_of(configmap: Mapping[str, Any] | None) -> dict[str, str]:
    """The data of a delivered ``pg-loadbalancer-data`` (``external-ip``, ``port``, ``dbname``)."""
    return _data(configmap) if configmap is not None else {}


def delivered_credentials(
    secret: Mapping[str, Any], configmap: Mapping[str, Any]
) -> tuple[Credentials, Endpoint]:
    """What a delivery wrote: the Secret ``pg-credentials`` (user, password) with the ConfigMap
    ``pg-loadbalancer-data`` (address, dbname)."""
    data, address = _data(secret), address_of(configmap)
    creds = Credentials(
        user=_decode(data, "user"),
        dbname=address.get("dbname", ""),
        source=Meta.of(secret).annotations.get(SOURCE_ANNOTATION, ""),
        password=_decode(data, "password"),
    )
    return creds, Endpoint(address["external-ip"], int(address["port"]))


def same_secret(source: str, other: str) -> bool:
    """Whether two sources name one Secret (service cluster, name and uid), in any version."""
    return bool(source) and source.rpartition("/")[0] == other.rpartition("/")[0]
