"""The run history: one SQLite file that every run appends to (the nightly trend).

Tables:
  runs   one row per run: uid, started/finished (UTC, ISO 8601), status, exit status,
         library versions, device, Hypothesis profile, command line, wall time and time
         inside backends, worker count.
  cases  one row per checked case (one JSONL record): the case's key, verdict, worst
         errors, and the whole record as JSON.

Status: a run is 'running' from its start (the parity tests were collected) until the
session ends; then 'complete' (the session finished and its reports were written,
whatever the test outcomes; exit_status says those) or 'failed' (interrupted by Ctrl-C
or SIGTERM, internal error, a crashed xdist worker, no case recorded, reports that could
not be written). A run killed outright (SIGKILL) stays 'running' until the next run on
the same reports directory finds it dead and marks it 'failed' (mark_abandoned); nothing
ever compares against a run that is not 'complete'.

Durability: every case is its own committed transaction, so a killed run keeps every
case recorded before the kill. WAL journal with synchronous=NORMAL: a commit is in the
WAL file when commit() returns, which survives the process dying (not a power cut,
which would cost the last commits, never the file's integrity); it also lets several
xdist workers append while a reader looks.

Rows are created when a parity run starts: a session that collects no parity test
(pytest tests/, --list-models, --collect-only) never creates a run row nor the file.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from reports.metrics import ERROR_METRICS, group_key, worst_errors

SCHEMA_VERSION = 1
STATUSES = ("running", "complete", "failed")

# metric key in records -> column in `cases`
METRIC_COLUMNS = {"max_px": "worst_keypoint_px", "max_corner_px": "worst_box_px", "max_abs": "worst_abs"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    uid                 TEXT NOT NULL UNIQUE,
    started_at          TEXT NOT NULL,
    finished_at         TEXT,
    status              TEXT NOT NULL CHECK (status IN ('running', 'complete', 'failed')),
    exit_status         INTEGER,
    torch_version       TEXT,
    onnxruntime_version TEXT,
    tensorrt_version    TEXT,
    device              TEXT,
    cpu                 TEXT,
    host                TEXT,
    hypothesis_profile  TEXT,
    command             TEXT,
    workers             INTEGER NOT NULL DEFAULT 0,
    wall_seconds        REAL,
    inference_seconds   REAL
);
CREATE TABLE IF NOT EXISTS cases (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id            INTEGER NOT NULL REFERENCES runs(id),
    recorded_at       TEXT NOT NULL,
    worker            TEXT,
    model             TEXT NOT NULL,
    backend           TEXT NOT NULL,
    precision         TEXT NOT NULL,
    check_name        TEXT NOT NULL,
    height            INTEGER,
    width             INTEGER,
    batch             INTEGER,
    dtypes            TEXT,
    seed              INTEGER,
    verdict           TEXT NOT NULL,
    seconds           REAL,
    worst_keypoint_px REAL,
    worst_box_px      REAL,
    worst_abs         REAL,
    record            TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cases_by_run ON cases (run_id, model, backend, precision, check_name);
"""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunIdentity:
    """What every process of one session needs to append to the same run row.

    The controller (or the single process) makes it; xdist workers get it through
    workerinput, so all of them write one run.
    """

    db_path: Optional[str]  # None: no history (--history-db off); the run still has its uid
    uid: str
    started_at: str
    hypothesis_profile: str
    command: str
    workers: int
    pid: int = 0  # the process that owns the run

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class HistoryStore:
    def __init__(self, path: Path, timeout: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # timeout: how long a writer waits for another xdist worker's commit to finish.
        self.connection = sqlite3.connect(str(self.path), timeout=timeout)
        self.connection.row_factory = sqlite3.Row
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        with self.connection:
            self.connection.executescript(_SCHEMA)
            version = self.connection.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self.connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: history schema {version}, this harness writes {SCHEMA_VERSION}")

    def close(self) -> None:
        self.connection.close()

    # ---------------------------------------------------------------- writing

    def ensure_run(self, identity: RunIdentity, environment: dict) -> int:
        """The id of the run row for `identity`, created (status 'running') if absent.

        Several xdist workers may race here; the UNIQUE uid makes exactly one insert win.
        """
        with self.connection:
            self.connection.execute(
                "INSERT OR IGNORE INTO runs (uid, started_at, status, torch_version, onnxruntime_version,"
                " tensorrt_version, device, cpu, host, hypothesis_profile, command, workers)"
                " VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (identity.uid, identity.started_at, environment.get("torch"), environment.get("onnxruntime"),
                 environment.get("tensorrt"), environment.get("device"), environment.get("cpu"),
                 environment.get("host"), identity.hypothesis_profile, identity.command, identity.workers),
            )
        return self.run_id(identity.uid)

    def mark_abandoned(self, uid: str) -> Optional[int]:
        """A run still 'running' whose process is gone (killed before its session end):
        mark it 'failed'. Returns its id when it was marked, else None."""
        with self.connection:
            changed = self.connection.execute(
                "UPDATE runs SET status = 'failed', finished_at = ? WHERE uid = ? AND status = 'running'",
                (utc_now(), uid)).rowcount
        return self.run_id(uid) if changed else None

    def record_case(self, run_id: int, record: dict, worker: str = "") -> None:
        """One case, committed before returning (a kill after this loses nothing of it)."""
        worst = worst_errors(record)
        with self.connection:
            self.connection.execute(
                "INSERT INTO cases (run_id, recorded_at, worker, model, backend, precision, check_name, height,"
                " width, batch, dtypes, seed, verdict, seconds, worst_keypoint_px, worst_box_px, worst_abs, record)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, utc_now(), worker, record["model"], record["backend"], record["precision"],
                 record["check"], record.get("height"), record.get("width"), record.get("batch"),
                 ",".join(record.get("dtypes", [])), record.get("seed"), record["verdict"], record.get("seconds"),
                 worst["max_px"], worst["max_corner_px"], worst["max_abs"], json.dumps(record, sort_keys=True)),
            )

    def finish_run(self, uid: str, status: str, exit_status: int, wall_seconds: float,
                   inference_seconds: float) -> None:
        if status not in STATUSES or status == "running":
            raise ValueError(f"finish_run: status must be 'complete' or 'failed', got {status!r}")
        with self.connection:
            self.connection.execute(
                "UPDATE runs SET status = ?, exit_status = ?, finished_at = ?, wall_seconds = ?,"
                " inference_seconds = ? WHERE uid = ?",
                (status, int(exit_status), utc_now(), wall_seconds, inference_seconds, uid),
            )

    # ---------------------------------------------------------------- reading

    def run_id(self, uid: str) -> Optional[int]:
        row = self.connection.execute("SELECT id FROM runs WHERE uid = ?", (uid,)).fetchone()
        return row[0] if row else None

    def run(self, run_id: int) -> Optional[dict]:
        row = self.connection.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return dict(row) if row else None

    def runs(self, limit: int = 50) -> list:
        """The latest runs, newest first, with their case and failure counts."""
        rows = self.connection.execute(
            "SELECT r.*, COUNT(c.id) AS cases, SUM(c.verdict IN ('fail', 'error', 'timeout')) AS failed_cases"
            " FROM runs r LEFT JOIN cases c ON c.run_id = r.id GROUP BY r.id ORDER BY r.id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [dict(r) for r in rows]

    def cases(self, run_id: int) -> list:
        rows = self.connection.execute("SELECT record FROM cases WHERE run_id = ? ORDER BY id", (run_id,))
        return [json.loads(r[0]) for r in rows]

    def group_worst(self, run_ids: Optional[list] = None, status: str = "complete",
                    profile: Optional[str] = None) -> dict:
        """{run id: {group key: {metric: worst value}}} over runs with `status` (and profile)."""
        query = [
            "SELECT c.run_id, c.model, c.backend, c.precision, c.check_name,"
            + ", ".join(f" MAX(c.{column}) AS {metric}" for metric, column in METRIC_COLUMNS.items())
            + " FROM cases c JOIN runs r ON r.id = c.run_id WHERE r.status = ?"
        ]
        params: list = [status]
        if profile is not None:
            query.append(" AND r.hypothesis_profile = ?")
            params.append(profile)
        if run_ids is not None:
            query.append(f" AND r.id IN ({','.join('?' * len(run_ids))})")
            params += list(run_ids)
        query.append(" GROUP BY c.run_id, c.model, c.backend, c.precision, c.check_name")
        result: dict = {}
        for row in self.connection.execute("".join(query), params):
            key = (row["model"], row["backend"], row["precision"], row["check_name"])
            result.setdefault(row["run_id"], {})[key] = {m: row[m] for m in ERROR_METRICS}
        return result

    def unit_seconds(self, profile: Optional[str]) -> dict:
        """{(model, backend): seconds} summed over the cases of each unit's latest complete
        run (with this Hypothesis profile unless None): what --shard balances by."""
        query = ("SELECT c.run_id, c.model, c.backend, SUM(c.seconds) AS seconds FROM cases c JOIN runs r"
                 " ON r.id = c.run_id WHERE r.status = 'complete'"
                 + (" AND r.hypothesis_profile = ?" if profile is not None else "")
                 + " GROUP BY c.run_id, c.model, c.backend ORDER BY c.run_id DESC")
        found: dict = {}
        for row in self.connection.execute(query, [profile] if profile is not None else []):
            if row["seconds"] is not None:
                found.setdefault((row["model"], row["backend"]), float(row["seconds"]))
        return found

    def baselines(self, current_run_id: int, groups, profile: Optional[str]) -> dict:
        """{group: (baseline run id, {metric: worst})}: for each group of the current run,
        the latest COMPLETE earlier run with the same Hypothesis profile that checked it.

        Per group rather than one run for all, so a nightly that ran one model on its own
        does not leave every other model without a baseline. Same profile, because the
        worst of 100 random examples is not comparable with the worst of 10 fixed ones.
        """
        earlier = {run_id: worst for run_id, worst in self.group_worst(profile=profile).items()
                   if run_id < current_run_id}
        found = {}
        for group in groups:
            for run_id in sorted(earlier, reverse=True):
                if group in earlier[run_id]:
                    found[group] = (run_id, earlier[run_id][group])
                    break
        return found


def worst_by_group(records: list) -> dict:
    """{group: {metric: (worst value, the record that has it)}} for one run's records."""
    result: dict = {}
    for record in records:
        worst = worst_errors(record)
        group = result.setdefault(group_key(record), {m: (None, None) for m in ERROR_METRICS})
        for metric, value in worst.items():
            if value is not None and (group[metric][0] is None or value > group[metric][0]):
                group[metric] = (value, record)
    return result

