"""reconcile's outcome: one row per cluster (and per Database request), the run's result and message.

Each cluster's repair ends :class:`Repaired` or raises :class:`ClusterNotRepaired`; a row says
which, with what was repaired and why a repair failed. The rows become the log lines, the table
artifact ``reconcile-outcome`` and the failed run's message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fleetflow.databases.status import Outcome

ARTIFACT_KEY = "reconcile-outcome"
REPAIRED = ("operator", "credentials", "app", "released", "request")  # what a step can report it repaired


@dataclass(frozen=True)
class Repaired:
    """A cluster brought in line with its labels; ``repaired`` is empty if nothing had to change."""

    repaired: list[str]
    seconds: float


class ClusterNotRepaired(Exception):
    """A cluster's repair failed at ``action``, after repairing ``repaired``."""

    def __init__(self, cluster: str, action: str, repaired: list[str], seconds: float, cause: str) -> None:
        super().__init__(f"{cluster}: {action}: {cause}")
        self.action, self.repaired, self.seconds, self.cause = action, repaired, seconds, cause


@dataclass(frozen=True)
class Row:
    """One cluster's outcome, as the artifact and the log show it."""

    cluster: str
    wanted: list[str]
    outcome: Literal["unchanged", "repaired", "failed"]
    repaired: list[str]
    seconds: float
    detail: str = ""

    def table(self) -> dict[str, str]:
        return {
            "cluster": self.cluster,
            "outcome": self.outcome,
            "wanted": ", ".join(self.wanted) or "-",
            "repaired": ", ".join(self.repaired) or "-",
            "seconds": f"{self.seconds:.1f}",
            "detail": self.detail,
        }

    def line(self) -> str:
        wants = f" ({', '.join(self.wanted)})" if self.wanted else " (nothing wanted)"
        took = f" in {self.seconds:.1f}s"
        if self.outcome == "failed":
            done = f"; repaired before that: {', '.join(self.repaired)}" if self.repaired else ""
            return f"{self.cluster}: FAILED{wants}{took}: {self.detail}{done}"
        if self.outcome == "repaired":
            return f"{self.cluster}: repaired {', '.join(self.repaired)}{wants}{took}"
        return f"{self.cluster}: unchanged{wants}{took}"


def row_of(cluster: str, wanted: list[str], result: Any, state_message: str | None) -> Row:
    """A cluster's row from what its task run returned (Repaired) or raised."""
    if isinstance(result, Repaired):
        outcome: Literal["unchanged", "repaired"] = "repaired" if result.repaired else "unchanged"
        return Row(cluster, wanted, outcome, result.repaired, result.seconds)
    if isinstance(result, ClusterNotRepaired):
        detail = f"{result.action}: {result.cause}"
        return Row(cluster, wanted, "failed", result.repaired, result.seconds, detail)
    # The task run itself crashed or was cancelled: its state says why.
    return Row(cluster, wanted, "failed", [], 0.0, state_message or f"{type(result).__name__}: {result}")


def request_row(ref: str, result: Any, state_message: str | None) -> Row:
    """A Database request's row: converged (its Secret rewritten or not) or failed, and why."""
    wanted = ["database-request"]
    if not isinstance(result, Outcome):
        return Row(ref, wanted, "failed", [], 0.0, state_message or f"{type(result).__name__}: {result}")
    if result.phase == "Failed":
        return Row(ref, wanted, "failed", [], 0.0, result.detail)
    changed = "written to" in result.detail or result.phase == "Deleted"
    return Row(
        ref,
        wanted,
        "repaired" if changed else "unchanged",
        ["request"] if changed else [],
        0.0,
        result.detail,
    )


def summary(rows: list[Row]) -> dict[str, list[str]]:
    """What was repaired where, and which clusters failed: the flow's result."""
    done: dict[str, list[str]] = {kind: [] for kind in REPAIRED}
    for row in rows:
        for kind in row.repaired:
            done[kind].append(row.cluster)
    done["failed"] = [row.cluster for row in rows if row.outcome == "failed"]
    return done


def _shortened(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failure_message(rows: list[Row]) -> str:
    """The failed run's message: every failed cluster, each with the start of why (the table has it all)."""
    failed = [row for row in rows if row.outcome == "failed"]
    named = "; ".join(f"{row.cluster} ({_shortened(row.detail)})" for row in failed)
    return (
        f"{len(failed)} of {len(rows)} clusters not repaired (the others were): {named}; "
        f"see the artifact {ARTIFACT_KEY}"
    )
