"""Running the external tools that build and import images: every call has a timeout, every failure one line.

The tools (gcc, umoci, mmdebstrap, go, ctr) report on stderr; a failure becomes a
:class:`~fleetflow.errors.BootstrapError` naming the command and its last stderr line, which is
what the CLI prints. A command that runs out of time is asked to stop (SIGTERM: mmdebstrap then
unmounts what it mounted in its chroot) before it is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from fleetflow.errors import BootstrapError

# How long a command that overran its timeout has to clean up after SIGTERM before SIGKILL.
_GRACE_SECONDS = 30.0


def describe(args: Sequence[str]) -> str:
    """The command's name and first argument, e.g. ``umoci raw``: enough to say what failed."""
    head = [os.path.basename(args[0]), *args[1:2]]
    return " ".join(head)


def run(
    args: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    name: str = "",
) -> str:
    """Run ``args`` to completion and return its stdout; raise BootstrapError if it fails or overruns.

    ``name`` is how the error names the command (default: the program and its first argument)."""
    name = name or describe(args)
    try:
        proc = subprocess.Popen(
            list(args),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as exc:
        raise BootstrapError(f"cannot run '{name}': {exc.strerror or exc}") from exc
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise BootstrapError(f"'{name}' did not finish within {timeout:.0f} s and was stopped") from None
    except BaseException:
        _stop(proc)
        raise
    if proc.returncode != 0:
        raise BootstrapError(f"'{name}' failed (exit {proc.returncode}): {last_line(stderr or stdout)}")
    return stdout


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the command's process group, then SIGKILL it if it is still there after the grace period."""
    for sig, wait in ((signal.SIGTERM, _GRACE_SECONDS), (signal.SIGKILL, _GRACE_SECONDS)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.communicate(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
