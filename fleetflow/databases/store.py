"""Write and read Database requests as a GitOps tool would: server-side apply, delete, get.

The webhook API and ``fleetflow db`` both go through here, so a request made either way is the
same object ``kubectl apply -f`` would have made; the watcher and the database-request flow take
it from there. A cluster registered before Database requests existed gets the CRD on first use.
"""

from __future__ import annotations

from typing import Any

from fleetflow.databases import crd
from fleetflow.databases.spec import DatabaseSpec, RequestRef, manifest
from fleetflow.errors import APINotFoundError, UsageError
from fleetflow.registry import Registry

MANAGED = {"app.kubernetes.io/managed-by": "fleetflow"}
CRD_API = "apiextensions.k8s.io/v1"


def apply(registry: Registry, ref: RequestRef, spec: DatabaseSpec) -> tuple[dict[str, Any], bool]:
    """Apply the Database ``ref`` with ``spec``: (the live object, whether its spec changed)."""
    if registry.get(ref.cluster) is None:
        raise APINotFoundError(f"cluster {ref.cluster!r} is not registered", status=404)
    client = registry.client(ref.cluster)
    if client.get_or_none(CRD_API, "CustomResourceDefinition", crd.CRD_NAME) is None:
        crd.install(client)
    before = client.get_or_none(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)
    if client.get_or_none("v1", "Namespace", ref.namespace) is None:
        client.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ref.namespace, "labels": MANAGED}}
        )
    after = client.apply(manifest(ref, spec))
    changed = before is None or before["metadata"].get("generation") != after["metadata"].get("generation")
    return after, changed


def get(registry: Registry, ref: RequestRef) -> dict[str, Any] | None:
    """The Database object, or None (also when its cluster has no Database CRD)."""
    if registry.get(ref.cluster) is None:
        raise APINotFoundError(f"cluster {ref.cluster!r} is not registered", status=404)
    try:
        return registry.client(ref.cluster).get_or_none(crd.API_VERSION, crd.KIND, ref.name, ref.namespace)
    except APINotFoundError:
        return None


def delete(registry: Registry, ref: RequestRef) -> bool:
    """Delete the Database; its finalizer holds it until its deletionPolicy was applied."""
    if get(registry, ref) is None:
        return False
    return bool(registry.client(ref.cluster).delete(crd.API_VERSION, crd.KIND, ref.name, ref.namespace))


def parse_spec(name: str, fields: dict[str, Any]) -> DatabaseSpec:
    """A spec from the fields given (None means "not given": the default)."""
    given = {k: v for k, v in fields.items() if v is not None}
    if not isinstance(given.get("instances", 1), int):
        raise UsageError(f"spec.instances {given['instances']!r} must be an integer")
    return DatabaseSpec.from_spec(name, given)
