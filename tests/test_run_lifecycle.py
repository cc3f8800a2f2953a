"""A run always leaves reports that describe it, whatever ends it; report I/O never changes
a verdict; one run at a time per reports dir; a hung case becomes TIMEOUT.

Real pytest processes on the tiny model (tests/tiny_cases.py): killed, terminated,
interrupted, run side by side, run on a full disk, run past a time limit.
"""

from __future__ import annotations

import json
import re
import resource
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from reports.history import HistoryStore, RunIdentity
from tests.suite_runs import PARITY_ONLY, start_suite
from tests.tiny_cases import write_cases_module

pytestmark = pytest.mark.slow


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    return process.communicate(timeout=timeout)[0]


def wait_for_cases(process: subprocess.Popen, reports: Path, cases: int, timeout: float = 120) -> None:
    """Until `process` has recorded `cases` cases (its run.json says so), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be stopped midway:\n" + finish(process)[-3000:]
        try:
            run = json.loads((reports / "run.json").read_text())
            if run.get("pid") == process.pid and run.get("cases", 0) >= cases:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"no {cases} cases recorded in {timeout}s")


def reports_of(reports: Path) -> tuple:
    run = json.loads((reports / "run.json").read_text())
    records = [json.loads(line) for line in (reports / "results.jsonl").read_text().splitlines() if line.strip()]
    return run, records, (reports / "index.html").read_text()


def assert_consistent(reports: Path, status: str, exact: bool = True) -> dict:
    """run.json, results.jsonl and index.html describe the same run, its status and its cases."""
    run, records, page = reports_of(reports)
    assert run["status"] == status, run
    assert {r["run"] for r in records} <= {run["run_uid"]} and records
    if exact:
        assert run["cases"] == len(records)
    else:  # killed: run.json's count is from its last progress write (at most every 0.5 s), never ahead
        assert 1 <= run["cases"] <= len(records)
    assert run["run_uid"] in page
    if status == "complete":
        assert "(complete, exit status" in page and "This run is" not in page
    else:
        assert f"This run is <strong>{status}</strong>" in page
    return run


def history(db: Path) -> dict:
    connection = sqlite3.connect(str(db))
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        runs = connection.execute("SELECT id, status, exit_status FROM runs ORDER BY id").fetchall()
        cases = dict(connection.execute("SELECT run_id, COUNT(*) FROM cases GROUP BY run_id").fetchall())
    finally:
        connection.close()
    return {run_id: (status, exit_status, cases.get(run_id, 0)) for run_id, status, exit_status in runs}


def plant_complete_run(db: Path, model: str) -> int:
    """An earlier complete run of the same group and profile: what the last run must compare with."""
    store = HistoryStore(db)
    try:
        run_id = store.ensure_run(RunIdentity(str(db), "planted-complete-run", "2026-01-01T00:00:00+00:00", "ci",
                                              "pytest suites", 0), {"torch": "earlier", "device": "cpu"})
        store.record_case(run_id, {"model": model, "backend": "torch-cpu", "precision": "fp32", "check": "parity",
                                   "height": 48, "width": 64, "batch": 1, "dtypes": ["float32"], "seed": 0,
                                   "verdict": "pass", "comparisons": [{"kind": "boxes", "verdict": "pass",
                                                                       "metrics": {"max_corner_px": 0.0}}]})
        store.finish_run("planted-complete-run", "complete", 0, 1.0, 0.5)
    finally:
        store.close()
    return run_id


def test_kill_term_and_ctrl_c_leave_reports_that_agree_and_the_next_run_compares_with_the_last_complete_one(
        tmp_path):
    module = write_cases_module(tmp_path / "slow_cases.py", "CASES = [tiny_case('tiny-slow', sleep_seconds=0.1)]\n")
    reports, cache, db = tmp_path / "reports", tmp_path / "cache", tmp_path / "history.sqlite"
    args = ("--model-module", str(module), "--backend", "torch-cpu")
    options = dict(target=PARITY_ONLY, history=str(db))
    baseline = plant_complete_run(db, "tiny-slow")

    killed = start_suite(reports, cache, *args, **options)
    wait_for_cases(killed, reports, 3)
    killed.send_signal(signal.SIGKILL)
    finish(killed)
    assert_consistent(reports, "running", exact=False)  # in progress when it died: the page says what that means

    terminated = start_suite(reports, cache, *args, **options)
    wait_for_cases(terminated, reports, 3)
    terminated.send_signal(signal.SIGTERM)
    output = finish(terminated)
    assert terminated.returncode == -signal.SIGTERM, output[-3000:]  # ends as SIGTERM asked, after the reports
    assert (f"reports: the previous run on this reports dir (pid {killed.pid}, started" in output
            and f"its history run #{baseline + 1} is now marked failed" in output), output[-3000:]
    run = assert_consistent(reports, "interrupted")
    assert run["status_reason"] == "interrupted by SIGTERM before it finished"

    interrupted = start_suite(reports, cache, *args, **options)
    wait_for_cases(interrupted, reports, 3)
    interrupted.send_signal(signal.SIGINT)
    output = finish(interrupted)
    assert interrupted.returncode == 2, output[-3000:]  # pytest's "interrupted"
    assert assert_consistent(reports, "interrupted")["status_reason"].startswith("interrupted (Ctrl-C / SIGINT)")

    last = start_suite(reports, cache, *args, "--progress-every", "1", **options)
    output = finish(last)
    assert last.returncode == 0, output[-3000:]
    run = assert_consistent(reports, "complete")
    assert run["history"]["baseline_run_ids"] == [baseline]  # never the killed or interrupted runs
    assert f"no metric regressions against #{baseline}" in output
    runs = history(db)
    assert [status for status, _, _ in runs.values()] == ["complete", "failed", "failed", "failed", "complete"]
    assert all(runs[baseline + i][2] >= 3 for i in (1, 2, 3))  # every case recorded before a kill is kept
    # A long test shows progress: model, backend, cases done, rate.
    assert re.search(r"\[parity \d+s\] tiny-slow on torch-cpu, test_parity: \d+ cases in \d+s \([\d.]+/s\)", output)


def test_a_second_run_on_a_busy_reports_dir_refuses_and_one_cache_exports_once(tmp_path):
    # The first run holds its reports dir for half a minute (a second per torch-cpu case);
    # the run beside it has the same case name and graph, without the sleep.
    slow = write_cases_module(tmp_path / "slow.py", "import os\nos.environ['TINY_DETECTOR_SLEEP'] = '1.0'\n"
                                                    "CASES = [tiny_case('tiny-shared')]\n")
    quick = write_cases_module(tmp_path / "quick.py", "CASES = [tiny_case('tiny-shared')]\n")
    reports, cache = tmp_path / "reports", tmp_path / "cache"
    backends = ("--backend", "onnxrt-cpu,torch-cpu")
    first = start_suite(reports, cache, "--model-module", str(slow), *backends, target=PARITY_ONLY)
    wait_for_cases(first, reports, 1)  # it holds the lock, and exported the graph
    second = start_suite(reports, cache, "--model-module", str(quick), *backends, target=PARITY_ONLY)
    elsewhere = start_suite(tmp_path / "reports-2", cache, "--model-module", str(quick), *backends,
                            target=PARITY_ONLY)
    refused = finish(second)
    assert second.returncode == 4, refused[-3000:]
    [line] = [line for line in refused.splitlines() if line.startswith("ERROR:")]
    assert line.startswith(f"ERROR: reports dir {reports} is in use by another run (pid {first.pid}, started ")
    assert line.endswith("; wait for it to finish, or give this run its own --reports-dir")
    output = finish(elsewhere)
    assert elsewhere.returncode == 0, output[-3000:]
    assert first.poll() is None, "the first run should still be running"
    first.send_signal(signal.SIGTERM)
    finish(first)
    runs = [assert_consistent(reports, "interrupted"), assert_consistent(tmp_path / "reports-2", "complete")]
    assert (runs[0]["exports"], runs[1]["exports"], runs[1]["export_cache_hits"]) == (1, 0, 1)
    assert not any(run["export_rebuilt"] for run in runs)
    assert len(list((cache / "onnx").glob("*.onnx"))) == 1


def _full_disk():
    """In the child: files may not grow past 4 kB (a full disk, as far as writes go)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))


def test_a_full_disk_for_the_reports_changes_no_verdict_and_ends_in_one_clear_error(tmp_path):
    module = write_cases_module(tmp_path / "cases.py")
    reports = tmp_path / "reports"
    run = start_suite(reports, tmp_path / "cache", "--model-module", str(module), "--backend", "torch-cpu",
                      target=PARITY_ONLY, preexec_fn=_full_disk)
    output = finish(run)
    assert run.returncode == 3, output[-3000:]  # pytest's "internal error": the harness, not the model
    assert "1 passed" in output and "FAILED" not in output  # the verdict stands
    [line] = [line for line in output.splitlines() if line.startswith("ERROR:")]
    assert line.startswith(f"ERROR: reports could not be written to {reports}: {reports / 'results.jsonl'}: "
                           "OSError: [Errno 27] File too large"), line
    assert line.endswith("; parity verdicts above are unaffected")
    assert "INTERNALERROR" not in output and "Traceback" not in output


def test_a_file_where_the_reports_dir_should_be_is_one_usage_error_before_anything_runs(tmp_path):
    module = write_cases_module(tmp_path / "cases.py")
    reports, db = tmp_path / "reports", tmp_path / "history.sqlite"
    reports.write_text("not a directory")
    run = start_suite(reports, tmp_path / "cache", "--model-module", str(module), "--backend", "torch-cpu",
                      target=PARITY_ONLY, history=str(db))
    output = finish(run)
    assert run.returncode == 4 and "passed" not in output, output[-3000:]
    [line] = [line for line in output.splitlines() if line.startswith("ERROR:")]
    assert line == (f"ERROR: reports dir {reports} (--reports-dir or PARITY_REPORTS_DIR): exists and is not a "
                    "directory; expected a directory (or a path where one can be made)"), line
    assert reports.read_text() == "not a directory" and "Traceback" not in output


def test_a_file_where_the_cache_dir_should_be_is_one_usage_error_before_anything_runs(tmp_path):
    module = write_cases_module(tmp_path / "cases.py")
    cache = tmp_path / "cache"
    cache.write_text("not a directory")
    run = start_suite(tmp_path / "reports", cache, "--model-module", str(module), "--backend", "onnxrt-cpu",
                      target=PARITY_ONLY)
    output = finish(run)
    assert run.returncode == 4 and "passed" not in output, output[-3000:]
    [line] = [line for line in output.splitlines() if line.startswith("ERROR:")]
    assert line.startswith(f"ERROR: export cache {cache} (--parity-cache-dir or PARITY_CACHE_DIR): exists and is not "
                           "a directory"), line


def test_a_run_that_records_nothing_says_so_in_every_report(tmp_path):
    module = write_cases_module(tmp_path / "cases.py")
    reports, db = tmp_path / "reports", tmp_path / "history.sqlite"
    # What an earlier green run left: it must not pass for this one.
    reports.mkdir()
    (reports / "run.json").write_text(json.dumps({"status": "complete", "cases": 27, "run_uid": "earlier"}))
    (reports / "results.jsonl").write_text(json.dumps({"run": "earlier", "verdict": "pass"}) + "\n")
    (reports / "index.html").write_text("<html>27 cases, 0 failing</html>")
    plant_complete_run(db, "tiny-det")
    nothing = start_suite(reports, tmp_path / "cache", "--model-module", str(module), "-k", "no_such_test",
                          history=str(db))
    output = finish(nothing)
    assert nothing.returncode == 5, output[-3000:]  # pytest's "no tests ran"
    run, records, page = reports_of(reports)
    assert (run["status"], run["cases"], records) == ("failed", 0, [])
    assert run["status_reason"].startswith("no case was recorded")
    assert run["run_uid"] in page and "This run is <strong>failed</strong>: no case was recorded" in page
    assert [status for status, _, _ in history(db).values()] == ["complete", "failed"]


def test_a_case_that_hangs_past_the_time_limit_is_recorded_as_timeout(tmp_path):
    module = write_cases_module(tmp_path / "cases.py", "CASES = [tiny_case('tiny-hangs', sleep_seconds=60)]\n")
    reports = tmp_path / "reports"
    start = time.monotonic()
    run = start_suite(reports, tmp_path / "cache", "--model-module", str(module), "--backend", "torch-cpu",
                      "--case-timeout", "1", target=PARITY_ONLY)
    output = finish(run)
    assert time.monotonic() - start < 45, "the time limit did not stop the hung case"
    assert run.returncode == 1, output[-3000:]
    [record] = reports_of(reports)[1]  # the first case timed out; the property stopped there, unshrunk
    assert record["verdict"] == "timeout" and record["model"] == "tiny-hangs"
    assert record["message"].startswith("TIMEOUT: parity tiny-hangs on torch-cpu ran past the time limit of 1 s "
                                        "(--case-timeout); interrupted in tiny_cases.py:")
    assert "in forward" in record["message"] and "--replay h=" in record["replay"]
    assert "TIMEOUT: parity tiny-hangs on torch-cpu ran past the time limit of 1 s" in output
    table = output[output.index("deploy parity summary"):]
    header, _, row = table.splitlines()[1:4]
    assert row.split()[header.split().index("timeout")] == "1"
