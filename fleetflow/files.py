"""Write a file so that a reader sees its old content or its new content, never half of either.

State files, settings, kubeconfigs, certificates and secrets are all rewritten while other
processes may read them, and a crash mid-write must not leave a truncated file behind; every
writer uses :func:`write_atomic`, so none can share a fixed temporary name with another, skip the
fsync, or leave a secret briefly readable under the umask.

The data goes to a temporary file with a unique name in the target's directory (so the final
rename stays on one file system), is fsynced, gets its mode, and is then renamed over the target
(or, with ``exclusive``, linked to it, so a file somebody else wrote first is never replaced). A
file with a ``mode`` is created owner-only (0600) and only then given ``mode``: a secret is never
readable by anybody else, not even for an instant.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, mode: int | None = None, *, exclusive: bool = False) -> bool:
    """Replace ``path`` with ``data`` (text is UTF-8) atomically; True once it is in place.

    ``mode`` sets the file's permissions exactly, whatever the umask; without it the file gets
    what a new file gets (0666 less the umask). With ``exclusive`` an existing ``path`` is kept
    and False returned. The directory must exist; a temporary file never outlives the call.
    """
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o666 if mode is None else 0o600)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # atomic, and fails rather than replace what is there
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
