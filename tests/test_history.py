"""The run history (SQLite): lifecycle, baselines, regressions, and a run killed midway."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from reports.history import HistoryStore, RunIdentity, worst_by_group
from reports.regressions import ABSOLUTE_FLOORS, REGRESSION_FACTOR, find_regressions, is_regression
from tests.suite_runs import run_suite, start_suite

GROUP = ("pose-rtmo", "onnxrt-cpu", "fp32", "parity")


def identity(db: Path, uid: str, profile: str = "ci") -> RunIdentity:
    return RunIdentity(db_path=str(db), uid=uid, started_at="2026-01-01T00:00:00+00:00", hypothesis_profile=profile,
                       command="pytest suites", workers=0)


def record(max_px: float, model: str = "pose-rtmo", check: str = "parity", verdict: str = "pass") -> dict:
    return {"model": model, "backend": "onnxrt-cpu", "precision": "fp32", "check": check, "height": 64,
            "width": 96, "batch": 1, "dtypes": ["float32"], "seed": 0, "verdict": verdict, "seconds": 0.1,
            "replay": f"pytest replay-{max_px}", "message": "",
            "comparisons": [{"kind": "keypoints", "output": "sample 0 / keypoints", "verdict": verdict,
                             "metrics": {"max_px": max_px}}]}


def add_run(store: HistoryStore, uid: str, values, status: str = "complete", profile: str = "ci") -> int:
    run_id = store.ensure_run(identity(store.path, uid, profile), {"torch": "2.x", "device": "cpu"})
    for value in values:
        store.record_case(run_id, record(value))
    if status != "running":
        store.finish_run(uid, status, 0 if status == "complete" else 2, 1.0, 0.5)
    return run_id


# ----------------------------------------------------------------------------- unit


def test_run_lifecycle_and_lazy_single_row(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite")
    first = store.ensure_run(identity(store.path, "u1"), {"torch": "2.15", "onnxruntime": "1.31", "device": "cpu"})
    # A second process of the same run (an xdist worker) gets the same row.
    assert store.ensure_run(identity(store.path, "u1"), {}) == first
    store.record_case(first, record(0.5))
    assert store.run(first)["status"] == "running" and store.run(first)["finished_at"] is None
    store.finish_run("u1", "complete", 1, 12.0, 3.0)
    run = store.run(first)
    assert (run["status"], run["exit_status"], run["torch_version"], run["tensorrt_version"]) == ("complete", 1, "2.15",
                                                                                                   None)
    assert store.cases(first) == [record(0.5)]
    with pytest.raises(ValueError):
        store.finish_run("u1", "running", 0, 0, 0)


def test_baseline_is_the_latest_complete_run_with_the_same_profile(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite")
    complete = add_run(store, "a", [0.1])
    add_run(store, "b", [0.2], status="failed")  # interrupted: never a baseline
    add_run(store, "c", [0.3], status="running")  # killed: never a baseline
    add_run(store, "d", [0.4], profile="nightly")  # other profile: not comparable
    current = add_run(store, "e", [0.5], status="running")
    baselines = store.baselines(current, [GROUP], "ci")
    assert baselines == {GROUP: (complete, {"max_px": 0.1, "max_corner_px": None, "max_abs": None})}


def test_regression_needs_the_factor_and_the_floor():
    floor = ABSOLUTE_FLOORS["max_px"]
    assert is_regression("max_px", 0.1, 0.1 * REGRESSION_FACTOR + floor)
    assert not is_regression("max_px", 0.1, 0.1 * REGRESSION_FACTOR * 0.99)  # under the factor
    assert not is_regression("max_px", 1e-6, 1e-3)  # x1000, but fp32 rounding: under the floor
    assert is_regression("max_px", 0.0, floor * 2)  # from exactly 0
    assert not is_regression("max_px", None, 100.0)  # nothing to compare with


def test_find_regressions_names_group_metric_and_worst_case():
    current = worst_by_group([record(0.01), record(3.0), record(0.02, check="batch")])
    baselines = {GROUP: (7, {"max_px": 0.5, "max_corner_px": None, "max_abs": None}),
                 ("pose-rtmo", "onnxrt-cpu", "fp32", "batch"): (7, {"max_px": 0.02, "max_corner_px": None,
                                                                     "max_abs": None})}
    [regression] = find_regressions(current, baselines)
    assert (regression.check, regression.metric, regression.baseline, regression.current) == ("parity", "max_px",
                                                                                              0.5, 3.0)
    assert regression.baseline_run_id == 7 and regression.replay == "pytest replay-3.0"
    assert "x6" in regression.describe()


def test_nan_errors_count_as_the_worst(tmp_path):
    broken = record(0.0)
    broken["comparisons"][0]["metrics"]["max_px"] = "nan"
    assert worst_by_group([broken])[GROUP]["max_px"][0] == float("inf")


# ---------------------------------------------------------------------- killed run


def case_rows(db: Path, run_id: int) -> int:
    if not db.is_file():
        return 0
    connection = sqlite3.connect(str(db), timeout=10)
    try:
        return connection.execute("SELECT COUNT(*) FROM cases WHERE run_id = ?", (run_id,)).fetchone()[0]
    except sqlite3.OperationalError:  # the first writer has not created the tables yet
        return 0
    finally:
        connection.close()


@pytest.mark.slow
def test_run_killed_midway_keeps_its_rows_and_is_never_a_baseline(tmp_path):
    db, cache = tmp_path / "history.sqlite", tmp_path / "cache"
    args = ("--model", "pose-rtmo", "--backend", "onnxrt-cpu", "-k", "test_determinism", "--history-db", str(db))
    first = run_suite(tmp_path, *args, cache_dir=cache)
    assert first.returncode == 0, first.output[-3000:]
    first_id = first.run_summary["history"]["run_id"]

    killed = start_suite(tmp_path / "killed", cache, *args, history=str(db), output=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while case_rows(db, first_id + 1) < 3 and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert killed.poll() is None, "the run ended before it could be killed midway"
        killed.send_signal(signal.SIGKILL)
    finally:
        killed.kill()
        killed.wait()

    connection = sqlite3.connect(str(db))
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        status, finished = connection.execute("SELECT status, finished_at FROM runs WHERE id = ?",
                                              (first_id + 1,)).fetchone()
        kept = connection.execute("SELECT COUNT(*) FROM cases WHERE run_id = ?", (first_id + 1,)).fetchone()[0]
    finally:
        connection.close()
    assert (status, finished) == ("running", None)
    assert 3 <= kept < len(first.records())  # what was committed before the kill is there; the rest never ran
    killed_lines = (tmp_path / "killed" / "results.jsonl").read_text().splitlines()
    assert len(killed_lines) >= kept  # the JSONL is durable per case too

    after = run_suite(tmp_path, *args, cache_dir=cache)
    assert after.returncode == 0, after.output[-3000:]
    history = after.run_summary["history"]
    assert history["run_id"] == first_id + 2
    assert history["baseline_run_ids"] == [first_id]  # the complete run, never the killed one
    assert f"no metric regressions against #{first_id}" in after.output
    store = HistoryStore(db)
    try:
        statuses = {r["id"]: r["status"] for r in store.runs()}
    finally:
        store.close()
    assert statuses == {first_id: "complete", first_id + 1: "running", first_id + 2: "complete"}
    assert json.loads((after.reports_dir / "run.json").read_text())["status"] == "complete"
