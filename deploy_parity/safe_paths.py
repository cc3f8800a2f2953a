"""Paths built from names (model cases, backends, keys) that must stay inside their folder.

Model case names are validated when cases are registered (deploy_parity/case.py:
check_name); this is the second line: every cache and report path built from a name is
checked to lie directly inside the folder it is meant for, so a name that slipped past
(a case renamed after registration, a library caller building cases by hand) can never
write elsewhere. File locks for the caches live here too.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from deploy_parity.errors import HarnessError

try:  # POSIX; elsewhere the caches run unlocked (one process at a time)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def inside(folder, filename: str) -> Path:
    """`folder / filename`, after checking the result lies directly inside `folder`."""
    folder = Path(folder)
    if not filename or os.sep in filename or (os.altsep and os.altsep in filename) or filename in (".", ".."):
        raise HarnessError(f"refusing the file name {filename!r} under {folder}: expected a plain file name, "
                           "no path separators")
    path = folder / filename
    if path.resolve().parent != folder.resolve():
        raise HarnessError(f"refusing to use {path}: it resolves to {path.resolve()}, outside {folder.resolve()}")
    return path


@contextlib.contextmanager
def file_lock(lock_path):
    """Hold an exclusive lock on `lock_path` (created if absent) for the block; blocks
    while another process holds it. The lock goes with the process: a killed holder
    never leaves it locked."""
    lock_path = Path(lock_path)
    handle = open(lock_path, "a+b")
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            except OSError as error:  # a filesystem without flock (some network mounts): unlocked
                if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
        yield
    finally:
        handle.close()  # closing the descriptor releases the lock


# Less free space than this in a cache or reports folder is refused at the start: one
# exported detector graph alone is tens of MB.
MIN_FREE_BYTES = 64 * 2**20


def directory_problem(path, min_free: int = MIN_FREE_BYTES) -> str:
    """Why `path` cannot serve as a folder the run writes into ("" when it can): a file in
    its place, a folder that cannot be made or written, too little free space. Checked
    once at the start, so the run stops with one line instead of failing case by case."""
    import shutil
    import tempfile

    path = Path(path)
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    if path.exists() and not path.is_dir():
        return "exists and is not a directory; expected a directory (or a path where one can be made)"
    if existing is not None and existing != path and not existing.is_dir():
        return f"{existing} is a file, so no directory can be made below it"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as error:
        return f"cannot be made or written: {error.strerror or error}"
    free = shutil.disk_usage(path).free
    if free < min_free:
        return f"has {free / 2**20:.1f} MiB free; expected at least {min_free / 2**20:.0f} MiB"
    return ""
