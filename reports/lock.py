"""One run at a time per reports directory: a lock file the writing run holds.

Two runs writing one reports directory interleave results.jsonl, overwrite each other's
run.json and crash at session end. The run that owns a reports directory holds an
exclusive flock on `<reports dir>/.parity-run.lock` from its start to its end, and
writes who it is into the file (pid, start time, command, run uid). A second run finds
the lock taken and refuses at its start, naming the holder. The kernel drops the lock
with its holder's last descriptor, so a killed run never leaves the directory locked.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, one run per directory is on the user
    fcntl = None

LOCK_NAME = ".parity-run.lock"
# flock on a filesystem that has none (some network mounts): run unlocked, and say so.
UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class ReportsBusy(Exception):
    """Another live run holds the reports directory."""

    def __init__(self, directory: Path, holder: dict):
        self.directory = Path(directory)
        self.holder = holder
        super().__init__(self.describe())

    def describe(self) -> str:
        pid = self.holder.get("pid", "unknown")
        started = self.holder.get("started_at", "an unknown time")
        command = self.holder.get("command")
        what = f"pid {pid}, started {started}" + (f": {command}" if command else "")
        return (f"reports dir {self.directory} is in use by another run ({what}); wait for it to finish, or give "
                "this run its own --reports-dir")


class ReportsLock:
    def __init__(self, directory):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._handle = None
        self.unsupported = ""  # why this directory could not be locked, when its filesystem cannot

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self, holder: dict) -> None:
        """Take the lock and record `holder` in it. ReportsBusy when another run holds it;
        OSError when the directory cannot hold a lock file at all."""
        handle = open(self.path, "a+", encoding="utf-8")
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise ReportsBusy(self.directory, self.read_holder()) from None
            except OSError as error:
                if error.errno not in UNSUPPORTED:
                    handle.close()
                    raise
                self.unsupported = f"{self.path}: {error.strerror or error}"
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(holder, sort_keys=True))
            handle.flush()
        except OSError:
            pass  # the lock is held all the same; only the note for a refused run is missing
        self._handle = handle

    def read_holder(self, wait: float = 1.0) -> dict:
        """Who holds the lock, as it wrote itself into the file (it writes right after
        taking it: wait a moment for that)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                text = self.path.read_text(encoding="utf-8")
                holder = json.loads(text) if text.strip() else None
            except (OSError, ValueError):
                holder = None
            if isinstance(holder, dict) or time.monotonic() >= deadline:
                return holder if isinstance(holder, dict) else {}
            time.sleep(0.05)

    def release(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()  # drops the flock
            finally:
                self._handle = None


def holder_info(uid: str, started_at: str, command: str, pid: Optional[int] = None) -> dict:
    return {"pid": pid or os.getpid(), "started_at": started_at, "command": command, "uid": uid}
