"""One JSON line per checked case, flushed as it is written (a killed run keeps them);
and the merge of xdist workers' files into one."""

from __future__ import annotations

import json
import os
from pathlib import Path

from deploy_parity.records import read_jsonl  # the reader lives with the format, in the package


class JsonlWriter:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Line-buffered append: every record is on disk once write() returns.
        self._handle = open(self.path, "w", buffering=1, encoding="utf-8")
        self.count = 0

    def write(self, record: dict) -> None:
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self.count += 1

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def close(self) -> None:
        if self._handle.closed:
            return
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()


def merge_jsonl(paths, merged: Path, run_uid: str = None) -> list:
    """Concatenate the JSONL files in `paths` (those that exist) into `merged`, atomically;
    returns the records. With `run_uid`, only records of that run are kept: a worker
    directory left by an earlier run is never mistaken for this one's."""
    records = []
    for path in paths:
        if Path(path).is_file():
            records += [r for r in read_jsonl(path) if run_uid is None or r.get("run") == run_uid]
    write_jsonl(records, merged)
    return records


def write_jsonl(records: list, path: Path) -> None:
    """`records` as `path`, one JSON line each, written whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
