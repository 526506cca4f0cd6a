"""Request and response bodies of the API. None of them can carry a password."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from fleetflow.errors import UsageError
from fleetflow.labels import validate_dns_label


def _cluster_name(value: str) -> str:
    try:
        return validate_dns_label(value, "cluster name")
    except UsageError as exc:
        raise ValueError(str(exc)) from None


ClusterName = Annotated[str, AfterValidator(_cluster_name)]
"""A cluster name, as in ``fleetflow cluster register NAME``: a DNS-1123 label (else 422)."""


def _namespace(value: str) -> str:
    try:
        return validate_dns_label(value, "namespace or request name")
    except UsageError as exc:
        raise ValueError(str(exc)) from None


Name = Annotated[str, AfterValidator(_namespace)]
"""A namespace or Database name: a DNS-1123 label (else 422)."""


class DatabaseRequest(BaseModel):
    """``POST /v1/databases``: ask for a Postgres database for a registered cluster.

    ``{"cluster": C}`` alone is the seed's label path (``postgres=required`` on C). With
    ``namespace`` and ``name`` it is a Database request object in namespace N of cluster C; the
    other fields are its spec (see the Database resource; omitted fields take its defaults).
    """

    # strict: "3" or true is not coerced into instances; a wrong type is a 422 naming the field.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)

    cluster: ClusterName
    namespace: Name | None = None
    name: Name | None = None
    database: str | None = Field(default=None, max_length=63)
    owner: str | None = Field(default=None, max_length=63)
    instances: int | None = None
    storage: str | None = Field(default=None, max_length=16)
    deletion_policy: str | None = Field(default=None, alias="deletionPolicy", max_length=16)
    secret_name: str | None = Field(default=None, alias="secretName", max_length=253)

    def spec(self) -> dict[str, object]:
        """The Database spec this body asks for (only the fields given)."""
        given = {
            "database": self.database,
            "owner": self.owner,
            "instances": self.instances,
            "storage": self.storage,
            "deletionPolicy": self.deletion_policy,
            "secretName": self.secret_name,
        }
        return {k: v for k, v in given.items() if v is not None}


class DatabaseAccepted(BaseModel):
    """202 answer to a request or a release: the label is written; the flows do the rest."""

    cluster: str
    requested: bool  # True after POST (postgres=required is set), False after DELETE
    changed: bool  # False when the label already was as asked: nothing was written
    status_url: str
    request: str = ""  # CLUSTER/NAMESPACE/NAME for a Database request; "" for the label path


class RequestInfo(BaseModel):
    """A Database request as its status shows it (never a password; only the Secret's name)."""

    request: str
    ready: str  # True, False or Unknown
    phase: str
    reason: str
    message: str
    service_cluster: str
    endpoint: str
    secret: str
    database: str


class DatabaseInfo(BaseModel):
    """One row of ``fleetflow show databases``: where, in which phase, and where credentials went."""

    cluster: str
    service_cluster: str
    phase: str
    endpoint: str
    credentials: str  # where credentials were delivered: "mgmt", "workload", "mgmt,workload" or "no"


class Health(BaseModel):
    status: str  # "ok" or "unavailable"
    reason: str = ""


class Problem(BaseModel):
    """Every error answer: one line of at most 500 characters, never a traceback."""

    detail: str
