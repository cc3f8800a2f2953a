"""One JSON line per checked case, flushed as it is written (a killed run keeps them)."""

from __future__ import annotations

import json
import os
from pathlib import Path


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


def read_jsonl(path: Path) -> list:
    """Every record in `path`. A last line cut short (its writer was killed mid-write) is
    dropped; a bad line anywhere else is an error."""
    with open(path, encoding="utf-8") as handle:
        lines = [line for line in handle if line.strip()]
    records = []
    for number, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines) - 1 and not line.endswith("\n"):
                break
            raise
    return records
