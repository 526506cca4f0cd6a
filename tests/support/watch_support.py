"""``fleetflow watch`` as a process, for the tests that start, stop and disturb it."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

FLEETFLOW = str(Path(sys.executable).parent / "fleetflow")


class WatchProcess:
    """``fleetflow watch`` as a user runs it; lines of its output are read as they come."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [FLEETFLOW, "watch"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if text in line:
                return
        raise AssertionError(
            f"awaited {text!r} from fleetflow watch; it printed: {''.join(self.seen)[-2000:]}"
        )

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0
        self.pump.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        while not self.lines.empty():
            self.seen.append(self.lines.get())

    def wait_for_all(self, texts: list[str], timeout: float = 60.0) -> dict[str, str]:
        """Wait until each of ``texts`` was printed, in any order, from now on; their lines."""
        found: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while len(found) < len(texts) and time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            found.update({t: line for t in texts if t in line and t not in found})
        missing = [t for t in texts if t not in found]
        if missing:
            raise AssertionError(
                f"awaited {missing} from fleetflow watch; it printed: {''.join(self.seen)[-2000:]}"
            )
        return found


def logged_at(line: str) -> float:
    """The epoch time of a ``fleetflow watch`` log line (``YYYY-MM-DD HH:MM:SS,mmm message``)."""
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()
