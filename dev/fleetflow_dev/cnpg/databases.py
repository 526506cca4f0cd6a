"""The stand-in's PostgreSQL: one server per service cluster, one role and database per Cluster.

The server of service cluster S lives under ``<root>/S/`` (:class:`LocalPostgres`). Cluster
N/X gets the login role and database :func:`contract.sql_name` ``(N, X)``, private to that
role. The database's comment says whose it is (``fleetflow cnpg stand-in: N/X uid=U``), so
the server itself records which Cluster (by uid) owns each database: a re-created Cluster
(new uid) gets a fresh, empty database, and databases whose Cluster is gone are found by
listing the comments.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleetflow.errors import FleetError, TemporaryError
from fleetflow.supervisor import pgroles
from fleetflow.supervisor.postgres import LocalPostgres
from fleetflow_dev.cnpg.contract import ClusterSpec, sql_name

log = logging.getLogger("fleetflow.cnpg")

COMMENT_PREFIX = "fleetflow cnpg stand-in:"
_COMMENT = re.compile(rf"^{re.escape(COMMENT_PREFIX)} ([^/ ]+)/([^/ ]+) uid=(\S*)$")


@dataclass(frozen=True)
class Owner:
    """The Cluster a database stands in for."""

    namespace: str
    name: str
    uid: str


def comment(namespace: str, name: str, uid: str) -> str:
    return f"{COMMENT_PREFIX} {namespace}/{name} uid={uid}"


def parse_comment(text: str) -> Owner | None:
    found = _COMMENT.match(text)
    return Owner(*found.groups()) if found else None


class Databases:
    """The PostgreSQL server of one service cluster and the Clusters' databases on it."""

    def __init__(self, root: Path, progress: Callable[[str], None] | None = None) -> None:
        self.server = LocalPostgres(root, progress=progress)
        # Set while the server died and is held down before its restart (``instances.supervise``):
        # nothing may start it meanwhile, as nothing starts a container in the kubelet's back-off.
        self.held = threading.Event()

    def _up(self) -> int:
        """The running server's port, starting it if needed (unless it is held down)."""
        if self.held.is_set():
            raise TemporaryError("the PostgreSQL instance died and is being restarted")
        return self.server.start().port

    def port(self) -> int | None:
        """The running server's port, or None when it does not run."""
        endpoint = self.server.status().endpoint
        return endpoint.port if endpoint is not None else None

    def owners(self) -> dict[str, Owner]:
        """Every stand-in database of the server and its Cluster (empty if the server was never made)."""
        if self.server.status().state == "Absent":
            return {}
        self._up()
        found = {name: parse_comment(text) for name, text in pgroles.database_comments(self.server).items()}
        return {name: owner for name, owner in found.items() if owner is not None}

    def ensure(self, spec: ClusterSpec, password: str | None) -> tuple[str, int]:
        """Cluster ``spec``'s role and database, with ``password`` when given; its password and the port.

        A database left by an earlier Cluster of the same name (another uid) is dropped first.
        """
        port = self._up()
        name = spec.sql_name
        owner = self.owners().get(name)
        if owner is not None and (owner.namespace, owner.name) != (spec.namespace, spec.name):
            raise FleetError(
                f"database {name} already stands in for Cluster {owner.namespace}/{owner.name} (name clash)"
            )
        if owner is not None and owner.uid != spec.uid:
            log.info(
                "cnpg stand-in: Cluster %s/%s was re-created; dropping the old one's database",
                spec.namespace,
                spec.name,
            )
            pgroles.drop_database(self.server, name, name)
        if password:
            # CloudNativePG keeps the role in line with its secret.
            pgroles.pin_password(self.server, name, password)
        known = password is not None or pgroles.has_password(self.server, name)
        password = pgroles.ensure_database(
            self.server, name, name, rotate=not known, comment=comment(spec.namespace, spec.name, spec.uid)
        )
        return password, port

    def drop(self, namespace: str, name: str, uid: str | None) -> bool:
        """Drop Cluster ``namespace/name``'s role and database (only if ``uid``'s, when given)."""
        dbname = sql_name(namespace, name)
        owner = self.owners().get(dbname)
        if owner is None or (uid is not None and owner.uid != uid):
            return False
        pgroles.drop_database(self.server, dbname, dbname)
        return True

    def orphans(self, live: set[tuple[str, str]]) -> list[tuple[str, str]]:
        """(namespace, name) of every database whose Cluster is not in ``live``."""
        return sorted({(o.namespace, o.name) for o in self.owners().values()} - live)


def servers(root: Path) -> list[LocalPostgres]:
    """Every stand-in server under ``root``: one per service cluster, ``root/<service cluster>``."""
    found: list[LocalPostgres] = []
    for base in sorted(p for p in root.glob("*") if p.is_dir()):
        if (base / "data").exists() or (base / "data").is_symlink():
            found.append(LocalPostgres(base))
    return found
