"""Request and response bodies of the API. None of them can carry a password."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from fleetflow.errors import UsageError
from fleetflow.labels import validate_dns_label


def _cluster_name(value: str) -> str:
    try:
        return validate_dns_label(value, "cluster name")
    except UsageError as exc:
        raise ValueError(str(exc)) from None


ClusterName = Annotated[str, AfterValidator(_cluster_name)]
"""A cluster name, as in ``fleetflow cluster register NAME``: a DNS-1123 label (else 422)."""


class DatabaseRequest(BaseModel):
    """``POST /v1/databases``: ask for a Postgres database for a registered cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: ClusterName


class DatabaseAccepted(BaseModel):
    """202 answer to a request or a release: the label is written; the flows do the rest."""

    cluster: str
    requested: bool  # True after POST (postgres=required is set), False after DELETE
    changed: bool  # False when the label already was as asked: nothing was written
    status_url: str


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
    """Every error answer other than 422: one line, never a traceback."""

    detail: str
