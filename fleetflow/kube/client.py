"""API access to one cluster: server-side apply, get, list, delete and watch-based wait.

Clients are built and cached in :mod:`fleetflow.kube.clients` (``client_for``,
``client_from_config``); this module holds what a client does. Every call translates the client
library's failures into :mod:`fleetflow.errors`.

Defaults chosen to be safe on a real cluster:

- server-side apply does not force: a field another manager owns (someone's ``kubectl edit``,
  an operator) is a :class:`~fleetflow.errors.ApplyConflictError` naming it, not silently taken
  over. Call sites where fleetflow is the one authority over an object pass ``force=True``.
- delete propagates in the background: without a policy a Job is deleted with its Pods left
  orphaned (batch/v1's default), still running.
- ``wait`` is an informer on one object (:mod:`fleetflow.kube.informer`): it backs off (0.5 s
  doubling to 5 s, jittered, never past its deadline) while the watch keeps failing, instead of
  relisting in a hot loop; once the server has answered, its restart (connections refused for
  a while) is waited out the same way, up to the deadline.
- label selectors go to the API server (typed: :class:`fleetflow.labels.Selector`), so lists
  return only what matches instead of everything for the caller to filter.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from kubernetes.dynamic.resource import Resource

from fleetflow.backoff import Backoff
from fleetflow.errors import (
    APIConflictError,
    APINotFoundError,
    ApplyConflictError,
    FleetflowError,
    PermanentError,
)
from fleetflow.kube.errors import api_errors
from fleetflow.kube.hub import hub
from fleetflow.kube.informer import SYNCED, Informer
from fleetflow.kube.transport import async_client
from fleetflow.kube.types import FIELD_MANAGER, Body, Propagation
from fleetflow.labels import Selector

Predicate = Callable[[dict[str, Any] | None], bool]

WAIT_BACKOFF = Backoff(first=0.5, cap=5.0)  # pauses of a wait while its watch keeps failing
WAIT_WATCH_TIMEOUT = 300  # seconds of one watch request of a wait, at most


class WaitTimeoutError(FleetflowError):
    """A wait ran out of time; the message says what was awaited and what was last seen."""


class KubeClient:
    """API access to one cluster (one kubeconfig context)."""

    def __init__(self, api: k8s.ApiClient, context: str) -> None:
        self.api = api
        self.context = context
        self._dynamic: DynamicClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._lock = threading.RLock()  # re-entered: resource() uses dynamic

    @property
    def dynamic(self) -> DynamicClient:
        with self._lock:
            if self._dynamic is None:
                with api_errors(f"discover APIs of {self.context}"):
                    self._dynamic = DynamicClient(self.api)
            return self._dynamic

    def resource(self, api_version: str, kind: str) -> Resource:
        # The client's discovery cache is not thread-safe (a refresh in one thread while another
        # searches it raised KeyError): lookups, cheap once cached, take the client's lock.
        with api_errors(f"look up {kind}.{api_version} in {self.context}"), self._lock:
            try:
                return self.dynamic.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                raise APINotFoundError(
                    f"{self.context} does not serve {kind} ({api_version}); is its CRD installed?",
                    status=404,
                ) from None

    def version(self, timeout: float = 10.0) -> dict[str, Any]:
        """``gitVersion`` and ``platform`` from ``/version``.

        An answer that is not a Kubernetes version (not JSON, fields missing: the address is not
        an API server's) is a PermanentError in one line, not the client library's
        multi-line validation error quoting what it got.
        """
        what = f"read /version of {self.context}"
        try:
            with api_errors(what):
                info = k8s.VersionApi(self.api).get_code(_request_timeout=timeout)
            return {"gitVersion": info.git_version, "platform": info.platform}
        except (ValueError, TypeError, AttributeError) as exc:
            raise PermanentError(
                f"{what}: the answer is not a Kubernetes version ({type(exc).__name__}); "
                "is this the address of a Kubernetes API server?"
            ) from None

    def apply(
        self, body: Body | dict[str, Any], *, force: bool = False, field_manager: str = FIELD_MANAGER
    ) -> dict[str, Any]:
        """Server-side apply ``body`` with field manager ``fleetflow``; return the live object.

        A field another manager set to a different value is an ApplyConflictError unless
        ``force`` (take it over: only where fleetflow is the object's one authority).
        ``field_manager`` names another writer (tests apply as a GitOps tool would).
        """
        resource, meta, what = self._target(body)
        with _apply_conflicts(), api_errors(f"apply {what} in {self.context}"):
            live = resource.server_side_apply(
                body=dict(body),
                namespace=meta.get("namespace"),
                field_manager=field_manager,
                force_conflicts=force,
            )
        return dict(live.to_dict())

    def _target(self, body: Body | dict[str, Any]) -> tuple[Resource, dict[str, Any], str]:
        """The API resource for ``body``, its metadata, and how to name it in an error."""
        meta = dict(body["metadata"])
        return (
            self.resource(body["apiVersion"], body["kind"]),
            meta,
            _describe(body["kind"], meta.get("name", "?"), meta.get("namespace")),
        )

    def create(self, body: Body | dict[str, Any]) -> dict[str, Any]:
        """Create (POST) ``body``; APIConflictError if it exists already."""
        resource, meta, what = self._target(body)
        with api_errors(f"create {what} in {self.context}"):
            live = resource.create(
                body=dict(body), namespace=meta.get("namespace"), field_manager=FIELD_MANAGER
            )
        return dict(live.to_dict())

    def apply_status(self, body: Body | dict[str, Any], *, force: bool = False) -> dict[str, Any]:
        """Server-side apply of the ``status`` subresource (field manager ``fleetflow``);
        ``force`` as for :meth:`apply`."""
        resource, meta, what = self._target(body)
        with _apply_conflicts(), api_errors(f"apply status of {what} in {self.context}"):
            live = resource.status.server_side_apply(
                body=dict(body),
                name=meta["name"],
                namespace=meta.get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=force,
            )
        return dict(live.to_dict())

    def merge_patch(
        self, api_version: str, kind: str, name: str, namespace: str | None, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """JSON merge patch; put ``metadata.resourceVersion`` in ``patch`` for optimistic
        concurrency (a concurrent writer then gives APIConflictError, which is retried)."""
        resource = self.resource(api_version, kind)
        with api_errors(f"patch {_describe(kind, name, namespace)} in {self.context}"):
            live = resource.patch(
                body=patch,
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
                field_manager=FIELD_MANAGER,
            )
        return dict(live.to_dict())

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        resource = self.resource(api_version, kind)
        with api_errors(f"get {_describe(kind, name, namespace)} in {self.context}"):
            return dict(resource.get(name=name, namespace=namespace).to_dict())

    def get_or_none(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        try:
            return self.get(api_version, kind, name, namespace)
        except APINotFoundError:
            return None

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: Selector | str | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """(items, resourceVersion) so that a watch can resume exactly after the list.

        ``label_selector`` (a :class:`~fleetflow.labels.Selector`, or its ``k=v,...`` text) is
        applied by the API server: only matching objects are sent.
        """
        resource = self.resource(api_version, kind)
        selector = str(label_selector) if label_selector is not None else None
        with api_errors(f"list {kind} in {self.context}"):
            result = resource.get(namespace=namespace, label_selector=selector or None).to_dict()
        return list(result.get("items") or []), str(result["metadata"].get("resourceVersion", ""))

    def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        propagation: Propagation = "Background",
    ) -> bool:
        """Delete; False if it was already gone.

        Dependents (a Job's Pods) are garbage-collected after the object is gone
        (``Background``); ``Foreground`` keeps the object until they are, ``Orphan`` leaves them.
        """
        resource = self.resource(api_version, kind)
        try:
            with api_errors(f"delete {_describe(kind, name, namespace)} in {self.context}"):
                resource.delete(name=name, namespace=namespace, propagation_policy=propagation)
        except APINotFoundError:
            return False
        return True

    def wait_established(self, crd_name: str, *, timeout: float, awaiting: str = "") -> None:
        """Watch the CustomResourceDefinition ``crd_name`` until it is Established: served, so
        that objects of its kind can be applied (it exists a moment before that)."""
        self.wait(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            crd_name,
            None,
            established,
            timeout=timeout,
            awaiting=awaiting or f"CRD {crd_name} to be Established in {self.context}",
        )

    def wait(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        predicate: Predicate,
        *,
        timeout: float,
        awaiting: str,
    ) -> dict[str, Any] | None:
        """Watch one object until ``predicate(obj)`` holds (``obj`` is None once it is gone).

        An :class:`~fleetflow.kube.informer.Informer` on the object's name: it lists first (the
        object may already be there), then watches, resuming after a dropped stream and
        relisting after 410 Gone, backing off (``WAIT_BACKOFF``, never past the deadline) while
        the API server is restarting. Raises WaitTimeoutError naming ``awaiting``, what was last
        seen and the last failure. A server that cannot be reached at all at the first list is the
        caller's error at once (its retries decide); one that answers 503 or 429 is waited for.
        """
        path = self.resource(api_version, kind).path(namespace=namespace)
        informer = Informer(
            self,
            api_version,
            kind,
            namespace=namespace,
            field_selector=f"metadata.name={name}",
            backoff=WAIT_BACKOFF,
            retry_unreachable=False,
            watch_timeout=max(1, min(int(timeout) + 1, WAIT_WATCH_TIMEOUT)),
            path=path,
            http=self.http,
        )
        seen: list[dict[str, Any] | None] = [None]

        async def until() -> dict[str, Any] | None:
            async for event in informer.events():
                if event.type == SYNCED:
                    seen[0] = event.items[0] if event.items else None
                else:
                    seen[0] = None if event.type == "DELETED" else event.object
                if predicate(seen[0]):
                    return seen[0]
            return None  # pragma: no cover - events() ends only by raising

        async def within() -> dict[str, Any] | None:
            async with asyncio.timeout(timeout):
                return await until()

        what = _describe(kind, name, namespace)
        try:
            return hub().run(within())
        except TimeoutError:
            last = seen[0]
            state = (
                "absent"
                if last is None
                else f"last seen resourceVersion {last['metadata'].get('resourceVersion')}"
            )
            if informer.last_error:
                state += f"; then: {informer.last_error}"
            raise WaitTimeoutError(
                f"timed out after {timeout:.0f}s waiting for {awaiting} ({what} in {self.context}: {state})"
            ) from None

    @property
    def http(self) -> httpx.AsyncClient:
        """The raw HTTP client of this cluster for informers (built once, from ``api``'s
        Configuration: the same server, CA, certificate and token)."""
        with self._lock:
            if self._http is None:
                self._http = async_client(self.api.configuration)
            return self._http


def _describe(kind: str, name: str, namespace: str | None) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


_APPLY_CONFLICT = "Apply failed with"


@contextmanager
def _apply_conflicts() -> Iterator[None]:
    """A server-side apply conflict (409 "Apply failed with N conflicts") is permanent: the
    same body gets the same answer until the other manager's fields are resolved or forced.

    Note that fleetflow's own create() and merge_patch() count as another manager here (an
    Update, not an Apply, by ``fleetflow``): applying a changed value to a field they wrote
    conflicts too. The server lists the fields one per line; the message is made one line.
    """
    try:
        yield
    except APIConflictError as exc:
        if _APPLY_CONFLICT not in str(exc):
            raise  # an ordinary 409 (optimistic concurrency): temporary
        message = " ".join(str(exc).split())
        raise ApplyConflictError(message, status=exc.status, reason=exc.reason) from None


def established(crd: dict[str, Any] | None) -> bool:
    """Whether a CustomResourceDefinition is Established (its kind is served)."""
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)
