"""A label edit made while a probe writes the record's status is applied to the new state.

``fleetflow cluster label`` (and the demo) read the FleetCluster, then merge-patch its labels
guarded by that resourceVersion; a probe recording its status in between makes that a 409. The
edit is relative (add, overwrite, remove), so it is applied again to what is there now.
"""

from __future__ import annotations

from typing import Any

import pytest

from fleetflow.errors import APIConflictError
from fleetflow.labels import LabelEdit
from fleetflow.registry import Registry
from fleetflow.registry.store import EDIT_ATTEMPTS


class Mgmt:
    """The management cluster's FleetCluster, whose resourceVersion moves ``races`` times
    between a read and the following write."""

    def __init__(self, races: int) -> None:
        self.labels = {"postgres": "required"}
        self.version = 1
        self.races = races
        self.writes = 0

    def get_or_none(self, *_: Any) -> dict[str, Any]:
        meta = {
            "name": "wl",
            "namespace": "wl",
            "labels": dict(self.labels),
            "resourceVersion": str(self.version),
        }
        return {"metadata": meta, "status": {}}

    def merge_patch(self, *args: Any) -> dict[str, Any]:
        patch = args[-1]
        if self.races:
            self.races -= 1
            self.version += 1  # a probe wrote the status meanwhile
            raise APIConflictError("the object has been modified", status=409)
        assert patch["metadata"]["resourceVersion"] == str(self.version)
        for key, value in patch["metadata"]["labels"].items():
            if value is None:
                self.labels.pop(key, None)
            else:
                self.labels[key] = value
        self.version += 1
        self.writes += 1
        return self.get_or_none()


def test_an_edit_racing_a_status_write_is_applied_to_the_new_state() -> None:
    mgmt = Mgmt(races=2)
    record = Registry(mgmt).edit_labels("wl", LabelEdit.parse(["type=app"]))  # type: ignore[arg-type]
    assert record.labels == {"postgres": "required", "type": "app"}
    assert mgmt.writes == 1


def test_a_record_that_keeps_changing_is_reported_after_a_few_attempts() -> None:
    mgmt = Mgmt(races=EDIT_ATTEMPTS)
    with pytest.raises(APIConflictError):
        Registry(mgmt).edit_labels("wl", LabelEdit.parse(["type=app"]))  # type: ignore[arg-type]
    assert mgmt.labels == {"postgres": "required"}
