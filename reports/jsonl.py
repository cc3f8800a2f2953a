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

    def close(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()


def read_jsonl(path: Path) -> list:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
