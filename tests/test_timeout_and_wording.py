"""The per-case time limit and the TIMEOUT verdict; comparison messages that name what
was compared (the batch check's image run alone, not a "reference"); the reports lock."""

from __future__ import annotations

import re
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from deploy_parity.backends import BACKENDS
from deploy_parity.check import check_batch_consistency, check_coverage, check_parity
from deploy_parity.compare.tensors import compare_tensors
from deploy_parity.compare.tolerances import lookup
from deploy_parity.compare.verdict import Verdict, combine, side_names
from deploy_parity.strategies import ParityExample
from deploy_parity.watchdog import CaseTimeout, time_limit
from reports.html import ReportPage, render
from reports.lock import ReportsBusy, ReportsLock, holder_info
from reports.summary import format_table, summarise
from tests.tiny_cases import TinyDetector, tiny_case

EXAMPLE = ParityExample(48, 64, 2, ("float32",), 3)


def test_time_limit_interrupts_python_and_says_where():
    start = time.monotonic()
    with pytest.raises(CaseTimeout) as info:
        with time_limit(0.3, "parity my-model on torch-cpu"):
            time.sleep(5)
    assert time.monotonic() - start < 2
    assert info.value.describe().startswith("parity my-model on torch-cpu ran past the time limit of 0.3 s "
                                            "(--case-timeout); interrupted in test_timeout_and_wording.py:")
    with time_limit(None):  # no limit: nothing armed
        time.sleep(0.01)
    with time_limit(0.2):  # a block that ends in time leaves no timer behind
        pass
    time.sleep(0.3)


def test_a_hung_check_becomes_a_timeout_verdict_with_its_case(make_pool):
    case = tiny_case("tiny-hangs", sleep_seconds=30)
    pool = make_pool(case_timeout=0.5)
    start = time.monotonic()
    result = check_parity(pool, case, BACKENDS["torch-cpu"], EXAMPLE)
    coverage = check_coverage(pool, case, BACKENDS["torch-cpu"])
    assert time.monotonic() - start < 10
    assert result.verdict == Verdict.TIMEOUT and coverage.verdict == Verdict.TIMEOUT
    assert result.message.startswith("TIMEOUT: parity tiny-hangs on torch-cpu ran past the time limit of 0.5 s")
    assert "tiny_cases.py" in result.message and "forward" in result.message
    record = result.to_record()
    assert (record["verdict"], record["height"], record["width"], record["batch"]) == ("timeout", 48, 64, 2)


def test_timeout_ranks_just_below_error():
    assert combine([Verdict.FAIL, Verdict.TIMEOUT, Verdict.PASS]) == Verdict.TIMEOUT
    assert combine([Verdict.TIMEOUT, Verdict.ERROR]) == Verdict.ERROR
    record = {"model": "m", "backend": "onnxrt-cpu", "precision": "fp32", "check": "parity", "height": 48,
              "width": 64, "batch": 1, "dtypes": ["float32"], "seed": 0, "verdict": "timeout", "comparisons": [],
              "message": "TIMEOUT: parity m on onnxrt-cpu ran past the time limit of 1 s", "replay": "pytest x"}
    rows = summarise([record])
    assert rows[0]["timeout"] == 1
    header, _, row = format_table(rows).splitlines()
    assert row.split()[header.split().index("timeout")] == "1"
    page = render(ReportPage(run={"status": "complete"}, rows=rows, records=[record]))
    assert '<td class="timeout">1 timeout</td>' in page and "1 timed out" in page


def test_summary_counts_distinct_sizes_and_the_rectangles_among_them():
    def record(h, w, seed):
        return {"model": "m", "backend": "onnxrt-cpu", "precision": "fp32", "check": "parity", "height": h,
                "width": w, "batch": 1, "dtypes": ["float32"], "seed": seed, "verdict": "pass", "comparisons": []}

    # Five cases over three sizes, two of them rectangles (one drawn three times).
    rows = summarise([record(64, 96, 0), record(64, 96, 1), record(64, 96, 2), record(64, 64, 3), record(96, 64, 4)])
    assert (rows[0]["cases"], rows[0]["sizes"], rows[0]["non_square"]) == (5, 3, 2)
    assert "3 (2 non-sq)" in format_table(rows)


class BatchLeaky(TinyDetector):
    """Boxes move 8 px right when the image shares its batch: a batch-consistency bug."""

    def forward(self, images):
        out = super().forward(images)
        return out + torch.tensor([8.0, 0.0, 8.0, 0.0, 0.0]) * (images.shape[0] - 1)


def test_batch_check_names_the_image_run_alone_and_the_batched_run(pool):
    case = replace(tiny_case(), build_deploy=lambda target: BatchLeaky().eval())
    result = check_batch_consistency(pool, case, BACKENDS["torch-cpu"], EXAMPLE)
    assert result.verdict == Verdict.FAIL
    text = result.summary()
    assert re.search(r"run alone instance \d \(box .*\) vs batched run instance \d \(box ", text), text
    assert "mean of batched run - run alone" in text, text
    assert "reference" not in text and "candidate" not in text, text


def test_determinism_and_default_wording():
    tol = lookup("tensor", "onnxrt-cpu", "fp32")
    with side_names("run 1", "run 2"):
        moved = compare_tensors(np.zeros(2), np.array([0.0, 1.0]), tol, "scores")
    assert "run 1 0, run 2 1" in moved.message and "reference" not in moved.message
    plain = compare_tensors(np.zeros(2), np.array([0.0, 1.0]), tol, "scores")
    assert "reference 0, candidate 1" in plain.message  # outside the block: the parity names again


def test_a_second_lock_on_a_reports_dir_names_the_holder(tmp_path):
    first, second = ReportsLock(tmp_path), ReportsLock(tmp_path)
    first.acquire(holder_info("uid-1", "2026-11-30T12:00:00+00:00", "pytest suites", pid=4242))
    with pytest.raises(ReportsBusy) as info:
        second.acquire(holder_info("uid-2", "2026-11-30T12:01:00+00:00", "pytest suites"))
    assert info.value.describe() == (f"reports dir {tmp_path} is in use by another run (pid 4242, started "
                                     "2026-11-30T12:00:00+00:00: pytest suites); wait for it to finish, or give "
                                     "this run its own --reports-dir")
    first.release()
    second.acquire(holder_info("uid-2", "2026-11-30T12:01:00+00:00", "pytest suites"))  # free again
    second.release()


class SlowToExport(TinyDetector):
    """Exports slowly (4 s inside torch.onnx.export), runs as fast as TinyDetector."""

    def forward(self, images):
        if torch.onnx.is_in_onnx_export():
            time.sleep(4.0)
        return super().forward(images)


def test_an_export_slower_than_the_case_limit_completes_is_cached_and_the_case_passes(make_pool):
    """A cold cache must not turn the first case of a model into a TIMEOUT: the export runs
    outside the case's limit (with its own, PARITY_BUILD_TIMEOUT), is stored, and the case's
    own clock (2 s here: a loaded CI machine's check stays far inside it) counts the check alone."""
    from deploy_parity.export.onnx_exporter import STATS

    case = replace(tiny_case("slow-export"), build_deploy=lambda target: SlowToExport().eval())
    pool = make_pool(case_timeout=2.0)
    exports = STATS.exports
    result = check_parity(pool, case, BACKENDS["onnxrt-cpu"], EXAMPLE)
    assert result.verdict == Verdict.PASS, result.summary()
    assert STATS.exports == exports + 1 and len(list((pool.context.cache_dir / "onnx").glob("*.onnx"))) == 1
    again = check_parity(make_pool(case_timeout=2.0), case, BACKENDS["onnxrt-cpu"], EXAMPLE)
    assert again.verdict == Verdict.PASS and STATS.exports == exports + 1  # a hit: nothing exported again


def test_a_build_past_its_own_limit_is_a_timeout_naming_the_build(make_pool, monkeypatch):
    monkeypatch.setenv("PARITY_BUILD_TIMEOUT", "0.5")
    case = replace(tiny_case("slower-export"), build_deploy=lambda target: SlowToExport().eval())
    result = check_parity(make_pool(case_timeout=60), case, BACKENDS["onnxrt-cpu"], EXAMPLE)
    assert result.verdict == Verdict.TIMEOUT, result.summary()
    assert "export of slower-export" in result.message and "PARITY_BUILD_TIMEOUT" in result.message
