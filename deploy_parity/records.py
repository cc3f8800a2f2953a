"""The results file every run writes: one JSON record per checked case (results.jsonl).

Written by the pytest plugin (fixtures/, through reports/jsonl.py); read here by whatever
needs a run's cases back: the reports, the merge of shards, the benchmarks' verdict
digest (two runs with the same digest checked the same cases and judged them alike).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional


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


def verdict_digest(results: Path) -> Optional[str]:
    """A short hash of every case (check, model, backend, size, batch, dtypes, seed) and its
    verdict: two runs with the same digest checked the same cases and judged them alike.
    None when the file cannot be read."""
    try:
        records = read_jsonl(results)
    except OSError:
        return None
    cases = sorted((r["check"], r["model"], r["backend"], r["height"], r["width"], r["batch"], tuple(r["dtypes"]),
                    r["seed"], r["verdict"]) for r in records)
    return hashlib.sha256(repr(cases).encode()).hexdigest()[:12]
