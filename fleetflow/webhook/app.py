"""The webhook receiver: a small HTTP API that turns requests into registry label changes or
Database objects.

``POST /v1/databases {"cluster": NAME}`` is exactly ``fleetflow cluster label NAME
postgres=required`` and ``DELETE /v1/databases/NAME`` is ``... postgres-``: the API writes the
label and nothing else; the label watcher and the Prefect automations do the rest, as for a
label set by hand. With ``namespace`` and ``name`` the body is a Database request: the API
applies the Database object in that namespace of the cluster, exactly as ``kubectl apply``
would, and ``GET``/``DELETE /v1/databases/CLUSTER/NAMESPACE/NAME`` read and delete it. Reads
are the rows of ``fleetflow show databases`` (never a password).

Every ``/v1`` route needs ``Authorization: Bearer <token>`` (see :mod:`webhook.auth`); then a
body must be at most 64 KiB of UTF-8 JSON nested at most 32 levels (see :mod:`webhook.limits`).
Errors are JSON ``{"detail": "<one line>"}``: 404 for a cluster that is not registered, 413 for
a body too large, 422 for a bad body or name (naming the field; at most 500 characters), 503
when the management cluster cannot be reached or configured, 502 when it answers with an error;
never a traceback.

Route handlers are plain functions, so the blocking Kubernetes calls run in the worker thread
pool. ``registry_factory`` is called once per request: ``fleetflow.registry.connect`` reuses
its client until the kubeconfig changes, so a restarted fleet (new ports) is picked up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response, status
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRouter
from fastapi.security import HTTPBearer

from fleetflow.backoff import Backoff, retry
from fleetflow.databases import inventory as requests
from fleetflow.databases import overview as inventory
from fleetflow.databases import store
from fleetflow.databases.spec import DatabaseSpec, RequestRef
from fleetflow.errors import (
    APIConflictError,
    APINotFoundError,
    ConfigError,
    FleetflowError,
    TemporaryError,
    UsageError,
)
from fleetflow.labels import LabelEdit
from fleetflow.registry import ClusterRecord, Registry
from fleetflow.webhook.auth import BearerAuth
from fleetflow.webhook.limits import BodyLimits, header_timeout_protocol
from fleetflow.webhook.models import (
    ClusterName,
    DatabaseAccepted,
    DatabaseInfo,
    DatabaseRequest,
    Health,
    Name,
    Problem,
    RequestInfo,
)

log = logging.getLogger(__name__)

POSTGRES_LABEL = "postgres"
REQUIRED = "required"
# A 409 means another writer edited the labels meanwhile: re-read and retry, 3 times at most.
CONFLICT_BACKOFF = Backoff(first=0.1, cap=0.4, attempts=3)


def one_line(exc: BaseException, limit: int = 500) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def status_for(exc: FleetflowError) -> int:
    """The HTTP status for a fleetflow error that reached the edge of the API."""
    if isinstance(exc, UsageError):
        return status.HTTP_422_UNPROCESSABLE_CONTENT
    if isinstance(exc, TemporaryError | ConfigError):
        return status.HTTP_503_SERVICE_UNAVAILABLE
    return status.HTTP_502_BAD_GATEWAY


def invalid(exc: RequestValidationError) -> str:
    """One line for pydantic's errors: ``where: what [type]; ...``, without pydantic's copy of
    the rejected input (it may be 64 KiB long, or a NaN that JSON cannot even carry back); a bad
    name is quoted by its validator's message, cut with the rest at 500 characters."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "request"
        what = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {what} [{error.get('type', 'invalid')}]")
    return one_line(RuntimeError("; ".join(parts)))


def status_url(cluster: str) -> str:
    return f"/v1/databases/{cluster}"


def _not_registered(cluster: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"cluster {cluster!r} is not registered")


def _edit(registry: Registry, cluster: str, change: str) -> tuple[ClusterRecord, ClusterRecord]:
    """Apply one kubectl-style label change, as ``fleetflow cluster label`` does: (before, after).

    No write when the label is already as asked. A 409 (a concurrent label edit) is retried on
    a fresh read, with the platform's backoff (``CONFLICT_BACKOFF``: a few tries within a
    second); nothing else is retried: an unreachable management cluster is a 503 at once. A
    cluster deregistered meanwhile is a 404.
    """
    edit = LabelEdit.parse([change])

    def attempt() -> tuple[ClusterRecord, ClusterRecord]:
        before = registry.get(cluster)
        if before is None:
            raise _not_registered(cluster)
        if edit.applied_to(before.labels) == before.labels:
            return before, before
        try:
            return before, registry.edit_labels(cluster, edit)
        except APINotFoundError:
            if registry.get(cluster) is None:
                raise _not_registered(cluster) from None
            raise

    return retry(f"label {cluster} {change}", attempt, CONFLICT_BACKOFF, is_transient=_conflict)


def _conflict(exc: BaseException) -> bool:
    return isinstance(exc, APIConflictError)


def _apply_request(registry: Registry, body: DatabaseRequest) -> tuple[RequestRef, bool]:
    """Apply the Database object ``body`` asks for: (reference, whether anything changed)."""
    if body.namespace is None or body.name is None:
        raise UsageError("a Database request needs both namespace and name (or neither, for the label path)")
    ref = RequestRef(body.cluster, body.namespace, body.name)
    spec = DatabaseSpec.from_spec(ref.name, body.spec())
    if registry.get(ref.cluster) is None:
        raise _not_registered(ref.cluster)
    _, changed = store.apply(registry, ref, spec)
    return ref, changed


def _connected(request: Request) -> Registry:
    factory: Callable[[], Registry] = request.app.state.registry_factory
    return factory()


Reg = Annotated[Registry, Depends(_connected)]
"""The request's registry, from the factory given to :func:`create_app`."""


def create_app(registry_factory: Callable[[], Registry], token: str) -> FastAPI:
    """The API application; every ``/v1`` route needs ``Authorization: Bearer <token>``."""
    if not token.strip():
        raise ConfigError("the API token must not be empty")

    errors: dict[int | str, dict[str, object]] = {
        401: {"model": Problem, "description": "Missing or wrong bearer token"},
        408: {"model": Problem, "description": "The body did not arrive in time"},
        413: {"model": Problem, "description": "The body is larger than 64 KiB"},
        422: {"model": Problem, "description": "A bad body or name; the detail names the field"},
        502: {"model": Problem, "description": "The management cluster answered with an error"},
        503: {"model": Problem, "description": "The management cluster cannot be reached"},
    }
    # Documents the scheme in OpenAPI; BearerAuth (below) does the checking, before routing.
    v1 = APIRouter(
        prefix="/v1", dependencies=[Depends(HTTPBearer(auto_error=False))], responses=errors, tags=["v1"]
    )
    not_found: dict[int | str, dict[str, object]] = {404: {"model": Problem}}

    @v1.post(
        "/databases",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=DatabaseAccepted,
        responses=not_found,
    )
    def request_database(body: DatabaseRequest, registry: Reg) -> DatabaseAccepted:
        """Label the cluster ``postgres=required``, or with namespace and name apply a Database
        request; idempotent."""
        if body.namespace is not None or body.name is not None:
            ref, changed = _apply_request(registry, body)
            log.info("database request %s applied (%s)", ref, "changed" if changed else "no change")
            return DatabaseAccepted(
                cluster=ref.cluster,
                requested=True,
                changed=changed,
                status_url=f"/v1/databases/{ref}",
                request=str(ref),
            )
        before, after = _edit(registry, body.cluster, f"{POSTGRES_LABEL}={REQUIRED}")
        changed = after.labels != before.labels
        log.info(
            "database requested for cluster %s (%s)", body.cluster, "labelled" if changed else "no change"
        )
        return DatabaseAccepted(
            cluster=body.cluster, requested=True, changed=changed, status_url=status_url(body.cluster)
        )

    @v1.delete(
        "/databases/{cluster}",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=DatabaseAccepted,
        responses=not_found,
    )
    def release_database(cluster: ClusterName, registry: Reg) -> DatabaseAccepted:
        """Remove the cluster's ``postgres`` label; idempotent."""
        before, after = _edit(registry, cluster, f"{POSTGRES_LABEL}-")
        changed = after.labels != before.labels
        log.info("database released for cluster %s (%s)", cluster, "unlabelled" if changed else "no change")
        return DatabaseAccepted(
            cluster=cluster, requested=False, changed=changed, status_url=status_url(cluster)
        )

    @v1.get("/databases/{cluster}/{namespace}/{name}", response_model=RequestInfo, responses=not_found)
    def get_request(cluster: ClusterName, namespace: Name, name: Name, registry: Reg) -> RequestInfo:
        """A Database request and its status."""
        ref = RequestRef(cluster, namespace, name)
        if registry.get(cluster) is None:
            raise _not_registered(cluster)
        obj = store.get(registry, ref)
        if obj is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no Database request {ref}")
        return RequestInfo(**asdict(requests.RequestRow.of(cluster, obj)))

    @v1.delete(
        "/databases/{cluster}/{namespace}/{name}",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=DatabaseAccepted,
        responses=not_found,
    )
    def delete_request(cluster: ClusterName, namespace: Name, name: Name, registry: Reg) -> DatabaseAccepted:
        """Delete a Database request; its deletionPolicy decides what happens to the data."""
        ref = RequestRef(cluster, namespace, name)
        if registry.get(cluster) is None:
            raise _not_registered(cluster)
        deleted = store.delete(registry, ref)
        log.info("database request %s %s", ref, "deleted" if deleted else "was already gone")
        return DatabaseAccepted(
            cluster=cluster,
            requested=False,
            changed=bool(deleted),
            status_url=f"/v1/databases/{ref}",
            request=str(ref),
        )

    @v1.get("/requests", response_model=list[RequestInfo])
    def list_requests(registry: Reg) -> list[RequestInfo]:
        """Every Database request in every registered cluster, with its readiness."""
        return [RequestInfo(**asdict(row)) for row in requests.rows(registry)]

    @v1.get("/databases", response_model=list[DatabaseInfo])
    def list_databases(registry: Reg) -> list[DatabaseInfo]:
        """Every cluster that asked for a database or has one placed: where, phase, address."""
        return [DatabaseInfo(**asdict(row)) for row in inventory.rows(registry)]

    @v1.get("/databases/{cluster}", response_model=DatabaseInfo, responses=not_found)
    def get_database(cluster: ClusterName, registry: Reg) -> DatabaseInfo:
        if registry.get(cluster) is None:
            raise _not_registered(cluster)
        for row in inventory.rows(registry):
            if row.cluster == cluster:
                return DatabaseInfo(**asdict(row))
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"cluster {cluster!r} has no database: POST /v1/databases to request one",
        )

    app = FastAPI(
        title="fleetflow",
        summary="Request Postgres databases for registered clusters",
        version="1",
    )
    app.state.registry_factory = registry_factory

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}}, tags=["health"])
    def healthz() -> Response:
        """200 when the management cluster answers; no token needed."""
        try:
            registry_factory().list()
        except FleetflowError as exc:
            reason = one_line(exc)
        except Exception as exc:  # the probe must answer, whatever broke
            log.exception("health check failed")
            reason = f"unexpected {type(exc).__name__}"
        else:
            return JSONResponse(Health(status="ok").model_dump(exclude_defaults=True))
        return JSONResponse(Health(status="unavailable", reason=reason).model_dump(), status_code=503)

    @app.exception_handler(FleetflowError)
    async def fleetflow_error(request: Request, exc: FleetflowError) -> JSONResponse:
        code, message = status_for(exc), one_line(exc)
        log.warning("%s %s -> %d: %s", request.method, request.url.path, code, message)
        return JSONResponse({"detail": message}, status_code=code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = invalid(exc)
        log.info("%s %s -> 422: %s", request.method, request.url.path, message)
        return JSONResponse({"detail": message}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback on the server; the client gets one line.
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500
        )

    app.include_router(v1)
    app.add_middleware(BodyLimits)  # inside BearerAuth: no body is read before the token is checked
    app.add_middleware(BearerAuth, token=token)
    return app


def serve(host: str, port: int, registry_factory: Callable[[], Registry], token: str) -> None:
    """Serve the API with uvicorn until interrupted (SIGINT/SIGTERM stop it gracefully).

    The token travels in a header: bind to a loopback address, or put a TLS proxy in front.
    """
    import uvicorn

    config = uvicorn.Config(
        create_app(registry_factory, token),
        host=host,
        port=port,
        proxy_headers=False,
        server_header=False,
        log_level="info",
        http=header_timeout_protocol(),
    )
    uvicorn.Server(config).run()
