"""Typed shapes for raw Kubernetes objects, as kopf names them: plain dicts with known keys."""

from __future__ import annotations

from typing import Any, Literal, NewType, NotRequired, TypedDict

ContextName = NewType("ContextName", str)
FieldManager = NewType("FieldManager", str)

FIELD_MANAGER = FieldManager("fleetflow")

# What happens to an object's dependents (a Job's Pods) when it is deleted.
Propagation = Literal["Background", "Foreground", "Orphan"]


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]
    uid: str
    resourceVersion: str
    generation: int
    deletionTimestamp: str


class Body(TypedDict):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: NotRequired[dict[str, Any]]
    status: NotRequired[dict[str, Any]]
    data: NotRequired[dict[str, str]]
    stringData: NotRequired[dict[str, str]]
