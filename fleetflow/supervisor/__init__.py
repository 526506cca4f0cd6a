"""``fleetflow up``: the whole platform as background processes, each checked before it counts.

- :mod:`.state`      the state file (what runs, where, on which Prefect database)
- :mod:`.server`     the Prefect server part and its UI
- :mod:`.prefect_db` the Prefect server's database: SQLite, a PostgreSQL fleetflow runs, or the user's
- :mod:`.pgserver`   the PostgreSQL server fleetflow runs for Prefect (:mod:`.postgres`)
- :mod:`.processes`, :mod:`.readiness`  background processes and their readiness checks
- :mod:`.parts`      the parts in order (``up``, ``status``, ``down``)
"""

from __future__ import annotations

from fleetflow.supervisor.parts import PARTS, down, status, up, up_server
from fleetflow.supervisor.state import PlatformState, load

__all__ = ["PARTS", "PlatformState", "down", "load", "status", "up", "up_server"]
