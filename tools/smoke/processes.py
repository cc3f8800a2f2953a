"""The smoke run's child processes: each in its own session, so that one kill takes it and
everything it started (pytest's workers, an exporter's helpers) and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import IO

from .layout import REPO


def start_child(command: list, log: IO, env: dict) -> subprocess.Popen:
    """`command` from the checkout's root, stdout and stderr to `log` under a `$ command` line."""
    log.write("$ " + " ".join(command) + "\n")
    log.flush()
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def kill_group(process: subprocess.Popen) -> None:
    """The child and anything it started (it runs in its own session)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()
