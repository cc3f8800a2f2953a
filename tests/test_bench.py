"""Latency benchmarks: structure only (cold apart from warm, throughput by batch). Never timings."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from deploy_parity.backends import BACKENDS
from deploy_parity.benchmarks.measure import BenchSettings, measure_backend
from deploy_parity.benchmarks.timing import device_synchronizer, latency_stats, no_sync, timed
from deploy_parity.registry import build_registry
from tests.suite_runs import REPO

COLD_KEYS = {"artifact_seconds", "exported", "create_seconds", "first_infer_seconds"}
WARM_KEYS = {"batch", "warmup_runs", "runs", "mean_ms", "median_ms", "p99_ms", "min_ms", "max_ms", "stdev_ms"}


def test_latency_stats():
    stats = latency_stats([0.001, 0.002, 0.003, 0.010])
    assert stats["runs"] == 4
    assert stats["mean_ms"] == pytest.approx(4.0) and stats["median_ms"] == pytest.approx(2.5)
    assert stats["min_ms"] == pytest.approx(1.0) and stats["max_ms"] == pytest.approx(10.0)
    assert 3.0 < stats["p99_ms"] <= 10.0
    with pytest.raises(ValueError):
        latency_stats([])


def test_cpu_backends_never_import_torch_for_timing():
    code = ("import sys, types; from deploy_parity.benchmarks.timing import device_synchronizer, no_sync; "
            "assert device_synchronizer(types.SimpleNamespace(gpu=False)) is no_sync; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_gpu_backends_synchronise_on_both_sides_of_the_clock(monkeypatch):
    calls = []
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: True,
                                                                  synchronize=lambda: calls.append("sync")))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    sync = device_synchronizer(types.SimpleNamespace(gpu=True))
    seconds, result = timed(lambda: calls.append("work") or 42, sync)
    assert calls == ["sync", "work", "sync"] and result == 42 and seconds >= 0
    # A GPU backend on a machine without CUDA: nothing to synchronise with.
    fake_torch.cuda.is_available = lambda: False
    assert device_synchronizer(types.SimpleNamespace(gpu=True)) is no_sync


@pytest.mark.parametrize("backend", ["onnxrt-cpu", "torch-cpu"])
def test_measure_reports_cold_apart_from_warm(runner_context, backend):
    case = build_registry().get("pose-rtmo")
    settings = BenchSettings(warmup=1, runs=3, batches=(1, 2, 16), throughput_warmup=1, throughput_runs=2)
    result = measure_backend(case, BACKENDS[backend], runner_context, settings)
    assert result["error"] is None
    assert set(result["cold"]) == COLD_KEYS and set(result["warm"]) == WARM_KEYS
    assert result["warm"]["runs"] == 3 and result["warm"]["warmup_runs"] == 1
    assert result["cold"]["first_infer_seconds"] > 0 and result["cold"]["create_seconds"] > 0
    # Batches beyond what the case accepts are left out, not run.
    assert [t["batch"] for t in result["throughput"]] == [1, 2]
    assert all(t["images_per_second"] > 0 for t in result["throughput"])
    assert (result["height"], result["width"]) == (case.sizes.export_height, case.sizes.export_width)


def test_unavailable_backend_is_reported_not_raised(runner_context):
    case = build_registry().get("pose-rtmo")

    backend = BACKENDS["torch-cuda-fp32"]
    if backend.unavailable() is None:
        pytest.skip("this machine has CUDA")
    result = measure_backend(case, backend, runner_context)
    assert result["error"].startswith("unavailable:") and "cold" not in result


@pytest.mark.slow
def test_command_writes_bench_json_and_merges(tmp_path):
    output, cache = tmp_path / "bench.json", tmp_path / "cache"
    common = [sys.executable, "-m", "deploy_parity.benchmarks.latency", "--model", "pose-rtmo", "--runs", "3", "--warmup", "1",
              "--batches", "1,2", "--throughput-runs", "2", "--output", str(output), "--cache-dir", str(cache)]
    first = subprocess.run(common + ["--backend", "onnxrt-cpu,torch-cpu"], cwd=REPO, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    document = json.loads(output.read_text())
    assert {r["backend"] for r in document["results"]} == {"onnxrt-cpu", "torch-cpu"}
    assert document["settings"]["isolated"] is True and document["host"]["torch"]
    for result in document["results"]:
        assert set(result["cold"]) == COLD_KEYS and set(result["warm"]) == WARM_KEYS
    assert "1st infer ms" in first.stdout

    # A second command for one backend replaces its figures and keeps the other's.
    second = subprocess.run(common + ["--backend", "onnxrt-cpu", "--in-process"], cwd=REPO, capture_output=True,
                            text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    results = json.loads(output.read_text())["results"]
    assert sorted(r["backend"] for r in results) == ["onnxrt-cpu", "torch-cpu"]

    unknown = subprocess.run(common + ["--backend", "no-such-backend", "--in-process"], cwd=REPO,
                             capture_output=True, text=True)
    assert unknown.returncode == 2 and "no-such-backend" in unknown.stderr


def test_overhead_benchmark_judges_the_same_feeds_with_the_harness_and_polygraphy(tmp_path, monkeypatch):
    """The P4 figures: the real Polygraphy Comparator and the harness on one set of outputs."""
    from deploy_parity.benchmarks.overhead import format_tables, judging_comparison

    monkeypatch.setenv("PARITY_CACHE_DIR", str(tmp_path))
    rows = judging_comparison(["pose-rtmo", "pose-rtmo-broken"], "onnxrt-cpu", 3)
    assert [(r["model"], r["backend"], r["feeds"]) for r in rows] == [("pose-rtmo", "onnxrt-cpu", 3),
                                                                        ("pose-rtmo-broken", "onnxrt-cpu", 3)]
    row, broken = rows
    assert row["harness_seconds"] > 0 and row["polygraphy_seconds"] > 0
    assert row["polygraphy_passed"] is True and row["harness_verdicts"] == ["pass"]  # fp32 graph vs eager: agree
    # The transposed prior grid: the second feed is rectangular, and both judges see it.
    assert "fail" in broken["harness_verdicts"] and broken["polygraphy_passed"] is False
    table = format_tables({"runs": [], "judging": rows})
    assert "| pose-rtmo | onnxrt-cpu | 3 |" in table


def test_the_report_shows_the_overhead_benchmark(tmp_path):
    from reports.html import ReportPage, render

    overhead = {"created": "2026-12-01T00:00:00+00:00", "profile": "ci", "models": "default run",
                "runs": [{"label": "warm 1", "outside_wall_seconds": 50.2, "overhead_ratio": 1.4, "cases": 700,
                          "phases": {"ms_per_case": {"render": 1.0, "activate": 2.0, "infer": 30.0, "compare": 3.0,
                                                     "record": 1.0, "other": 5.0}},
                          "reuse": {"feeds_rendered": 300, "feeds_distinct": 300, "feeds_served": 977,
                                    "runner_activations": 30, "distinct_artifacts": 30}}],
                "judging": [{"model": "pose-rtmo", "backend": "onnxrt-cpu", "feeds": 20, "harness_seconds": 0.04,
                             "polygraphy_seconds": 0.3, "harness_vs_polygraphy": 0.13}]}
    page = render(ReportPage(run={"status": "complete"}, rows=[], records=[], history={}, overhead_bench=overhead))
    assert "Harness overhead benchmark" in page and "300 / 300 / 977" in page and ">0.13<" in page


def test_the_overhead_benchmarks_verdict_digest_tells_apart_changed_verdicts(tmp_path):
    """--against compares runs by this digest: record order does not matter, a verdict does."""
    from deploy_parity.records import verdict_digest

    def record(seed, verdict):
        return {"check": "parity", "model": "m", "backend": "onnxrt-cpu", "height": 64, "width": 96, "batch": 1,
                "dtypes": ["float32"], "seed": seed, "verdict": verdict, "seconds": seed / 10}

    def digest(name, records):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return verdict_digest(path)

    same = digest("a.jsonl", [record(1, "pass"), record(2, "fail")])
    assert same == digest("b.jsonl", [record(2, "fail"), record(1, "pass")])
    assert same != digest("c.jsonl", [record(1, "pass"), record(2, "pass")])
    assert verdict_digest(tmp_path / "missing.jsonl") is None
