"""PostgreSQL's programs on this machine, the system user they run as, and their processes.

Kept apart from :mod:`supervisor.postgres` (one server's lifecycle) because none of this is
about a particular server: which ``/usr/lib/postgresql/<version>/bin`` to use (Debian's
packages), whom the programs run as (PostgreSQL refuses to run as root, so when we are root it
runs as the package's ``postgres`` user, who must be able to reach its data), whether a pid is a
live postmaster serving a given data directory (a pid in a stale ``postmaster.pid`` may belong
to anybody by now; read with psutil), and how to tell why a server did not start from its log.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from fleetflow.errors import BootstrapError, FleetError
from fleetflow.files import write_atomic

PG_BASE = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"  # the Debian package's system user, used only when we are root
TOOLS = ("initdb", "pg_ctl", "postgres", "psql")


def find_bindir(base: Path = PG_BASE, version: str | None = None) -> Path:
    """The ``bin`` directory of PostgreSQL ``version``, or of the newest one installed."""
    candidates: list[tuple[tuple[int, ...], Path]] = []
    if base.is_dir():
        for entry in base.iterdir():
            bindir = entry / "bin"
            if re.fullmatch(r"\d+(\.\d+)*", entry.name) and all((bindir / t).is_file() for t in TOOLS):
                candidates.append((tuple(int(p) for p in entry.name.split(".")), bindir))
    if version is not None:
        for _, bindir in candidates:
            if bindir.parent.name == version:
                return bindir
        raise BootstrapError(
            f"the data directory was initialised by PostgreSQL {version}, but {base}/{version}/bin "
            f"lacks {', '.join(TOOLS)}; install it with: apt-get install postgresql-{version}"
        )
    if not candidates:
        raise BootstrapError(
            f"no PostgreSQL server found: no {base}/<version>/bin with {', '.join(TOOLS)}; "
            "install it with: apt-get install postgresql"
        )
    return max(candidates)[1]


@dataclass(frozen=True)
class ServerUser:
    """Whom the server runs as: ourselves, or the ``postgres`` user when we are root."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    home: Path
    foreign: bool  # True when it is not the user running fleetflow

    @classmethod
    def detect(cls) -> ServerUser:
        if os.geteuid() != 0:
            entry = pwd.getpwuid(os.geteuid())
            return cls(os.geteuid(), os.getegid(), tuple(os.getgroups()), Path(entry.pw_dir), False)
        try:
            entry = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise BootstrapError(
                f"PostgreSQL refuses to run as root and there is no {SERVER_USER!r} user to run it as; "
                "apt-get install postgresql creates it"
            ) from None
        groups = tuple(os.getgrouplist(SERVER_USER, entry.pw_gid))
        return cls(entry.pw_uid, entry.pw_gid, groups, Path(entry.pw_dir), True)

    def can_traverse(self, path: Path) -> bool:
        """Whether this user may reach ``path``: search permission on it and every directory above."""
        for directory in (path, *path.parents):
            try:
                st = directory.stat()
            except OSError:
                return False
            if st.st_uid == self.uid:
                bit = 0o100
            elif st.st_gid in self.groups:
                bit = 0o010
            else:
                bit = 0o001
            if not st.st_mode & bit:
                return False
        return True

    def give(self, path: Path) -> None:
        if self.foreign:
            os.chown(path, self.uid, self.gid)

    def run(self, argv: Sequence[str | Path], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run one of the server's programs as this user, detached from our session."""
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.home), "LC_ALL": "C"}
        try:
            return subprocess.run(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=env,
                cwd=cwd,
                timeout=timeout,
                start_new_session=True,
                check=False,
                user=self.uid if self.foreign else None,
                group=self.gid if self.foreign else None,
                extra_groups=list(self.groups) if self.foreign else None,
            )
        except subprocess.TimeoutExpired:
            raise FleetError(f"{Path(argv[0]).name} did not finish within {timeout:.0f} s") from None

    def initdb(self, bindir: Path, data: Path, superuser: str, password: str) -> None:
        """Initialise ``data`` (SCRAM auth, UTF8, no locale); the password passes in a transient file."""
        pwfile = data.parent / ".initdb-password"
        write_atomic(pwfile, password + "\n", 0o600)
        try:
            self.give(pwfile)
            argv: list[str | Path] = [bindir / "initdb", "-D", data, "-U", superuser, f"--pwfile={pwfile}"]
            argv += ["--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--no-locale", "-E", "UTF8"]
            proc = self.run([*argv, "--no-instructions"], cwd=data.parent, timeout=300)
        finally:
            pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise FleetError(f"initdb failed for {data}: {last_line(proc.stderr) or proc.returncode}")

    def place_data(self, root: Path, data_link: Path, progress: Callable[[str], None]) -> None:
        """Make sure this user can reach the data (and the sockets and log beside it).

        The data lives in ``data_link`` under ``root``; when this user cannot reach ``root``
        (``/root`` is 0700, and so is pytest's tmp root) it lives in
        ``~postgres/fleetflow/<digest of root>/data`` instead and ``data_link`` points to it.
        """
        if not self.foreign:
            return
        os.chmod(root, 0o755)  # noqa: S103 - the server user must traverse it; secrets inside are 0600
        if self.can_traverse(root):
            return
        if data_link.is_dir() and not data_link.is_symlink():
            try:
                data_link.rmdir()
            except OSError:
                raise FleetError(
                    f"the {SERVER_USER!r} user cannot reach {data_link}, which is not empty"
                ) from None
        cluster_dir = self.home / "fleetflow" / hashlib.sha256(str(root).encode()).hexdigest()[:16]
        for directory in (cluster_dir.parent, cluster_dir):
            directory.mkdir(mode=0o700, exist_ok=True)
            self.give(directory)
        if not self.can_traverse(cluster_dir):
            raise FleetError(f"neither {root} nor {cluster_dir} is reachable for the {SERVER_USER!r} user")
        data_link.unlink(missing_ok=True)
        data_link.symlink_to(cluster_dir / "data")
        progress(f"postgres: the {SERVER_USER!r} user cannot reach {root}; data lives in {cluster_dir}")


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid in ``data_dir/postmaster.pid`` if it is a live ``postgres`` serving ``data_dir``.

    A zombie is not live, and a pid now used by another program, or by a postgres serving
    another data directory, is not this server's.
    """
    pid = read_int(data_dir / "postmaster.pid")
    if not pid:
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE or Path(process.exe()).name != "postgres":
            return None
        cwd = process.cwd()
    except psutil.Error:  # gone meanwhile, or not ours to inspect
        return None
    return pid if Path(cwd) == data_dir.resolve() else None


def problem(log: str) -> str:
    """The server log's first FATAL or PANIC line (why it stopped), else its last line."""
    for line in log.splitlines():
        for tag in ("FATAL:", "PANIC:"):
            if tag in line:
                return " ".join(line[line.index(tag) :].split())
    return last_line(log)


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[-1].split()) if lines else ""


def read_from(path: Path, offset: int) -> str:
    """What was appended to ``path`` after ``offset`` ("" if it cannot be read)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def read_int(path: Path) -> int | None:
    """The number on the first line of ``path``, or None."""
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None
