"""Parallel runs with pytest-xdist: one model per worker, GPUs and threads per worker, the merge."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import defaultdict

import pytest

from fixtures.scheduling import case_of_test, gpu_for_worker, scheduling_scope, threads_per_worker, visible_gpus
from tests.suite_runs import run_suite
from tests.tiny_cases import write_cases_module

NODE = "suites/test_parity.py::test_parity[pose-rtmo@onnxrt-cpu]"


def test_scope_is_the_model_case_or_model_and_backend():
    assert case_of_test(NODE) == ("pose-rtmo", "onnxrt-cpu")
    assert scheduling_scope(NODE) == scheduling_scope(NODE.replace("test_parity[", "test_determinism[")
                                                      .replace("onnxrt-cpu", "torch-cpu"))
    assert scheduling_scope(NODE, "model-backend") != scheduling_scope(NODE.replace("onnxrt-cpu", "torch-cpu"),
                                                                       "model-backend")
    # Tests without a model case (tests/) are their own unit; an explicit xdist_group still wins.
    assert scheduling_scope("tests/test_x.py::test_y") == "tests/test_x.py::test_y"
    assert scheduling_scope("tests/test_x.py::test_y[a@b]@mygroup") == "mygroup"
    # Given the registry's names, a parameter that is not a model case is no model scope.
    assert scheduling_scope("tests/test_b.py::test_m[onnxrt-cpu]", models={"pose-rtmo"}) == \
        "tests/test_b.py::test_m[onnxrt-cpu]"
    assert scheduling_scope(NODE, models={"pose-rtmo"}) == "model:pose-rtmo"


def test_gpus_round_robin_over_visible_devices():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    gpus = ["GPU-aa", "GPU-bb"]
    assert [gpu_for_worker(f"gw{i}", gpus) for i in range(4)] == ["GPU-aa", "GPU-bb", "GPU-aa", "GPU-bb"]
    assert gpu_for_worker("gw0", []) is None
    assert gpu_for_worker("master", gpus) is None


def test_threads_split_the_cores():
    assert threads_per_worker(2, cpus=2) == 1
    assert threads_per_worker(4, cpus=16) == 4
    assert threads_per_worker(8, cpus=2) == 1


@pytest.mark.slow
def test_parallel_run_keeps_each_model_on_one_worker_and_merges(tmp_path, monkeypatch):
    # Two "GPUs" that do not exist: the workers only get CUDA_VISIBLE_DEVICES set, and
    # the CPU backends never look at it.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    db = tmp_path / "history.sqlite"
    run = run_suite(tmp_path, "-n", "2", "--model", "pose-rtmo,detr-tiny", "--backend", "onnxrt-cpu,torch-cpu",
                    "-k", "test_determinism", "--history-db", str(db))
    assert run.returncode == 0, run.output[-3000:]

    merged = run.records()
    per_worker = {}
    for path in run.reports_dir.glob("gw*/results.jsonl"):  # a worker given no test writes none
        per_worker[path.parent.name] = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(merged) == sum(len(r) for r in per_worker.values()) > 0
    workers_of_model = defaultdict(set)
    for worker, records in per_worker.items():
        for record in records:
            workers_of_model[record["model"]].add(worker)
    assert set(workers_of_model) == {"pose-rtmo", "detr-tiny"}
    assert all(len(w) == 1 for w in workers_of_model.values()), dict(workers_of_model)  # each model: one worker
    assert {(r["model"], r["backend"]) for r in merged} == {(m, b) for m in ("pose-rtmo", "detr-tiny")
                                                            for b in ("onnxrt-cpu", "torch-cpu")}
    # The replay command names a test that exists without xdist (no "@group" suffix).
    assert all("@onnxrt-cpu]' " in r["replay"] or "@torch-cpu]' " in r["replay"] for r in merged)

    summary = run.run_summary
    assert summary["cases"] == len(merged) and summary["overhead"]["workers"] == 2
    assert summary["inference_seconds"] > 0 and summary["overhead"]["process_seconds"] > 0
    assert {w["id"]: w["gpu"] for w in summary["workers"]} == {"gw0": "5", "gw1": "7"}
    assert all(w["torch_threads"] >= 1 for w in summary["workers"])
    assert "xdist workers: gw0" in run.output and "harness overhead ratio" in run.output
    assert (run.reports_dir / "index.html").is_file()

    connection = sqlite3.connect(str(db))
    try:
        runs = connection.execute("SELECT id, status, workers FROM runs").fetchall()
        rows = connection.execute("SELECT worker, COUNT(*) FROM cases GROUP BY worker").fetchall()
    finally:
        connection.close()
    assert runs == [(summary["history"]["run_id"], "complete", 2)]  # one run, both workers in it
    assert dict(rows) == {w: len(r) for w, r in per_worker.items()}


@pytest.mark.slow  # a two-worker suite subprocess, ~30 s
def test_parallel_run_draws_pictures_from_the_workers_answers(tmp_path):
    """The workers hand the controller what their checks compared: no case is run twice."""
    module = write_cases_module(tmp_path / "shifted_cases.py",
                                "CASES = [tiny_case('tiny-shifted-a', offset=3.0), tiny_case('tiny-shifted-b', offset=3.0)]\n")
    run = run_suite(tmp_path, "-n", "2", "--model-module", str(module), "--backend", "onnxrt-cpu",
                    "--report-images", "4", "-k", "test_parity", profile="dev")
    assert run.returncode == 1, run.output[-3000:]
    assert {r["model"] for r in run.records() if r["verdict"] == "fail"} == {"tiny-shifted-a", "tiny-shifted-b"}
    drawn = re.search(r"\((\d+) case pictures", run.output)
    assert drawn and int(drawn.group(1)) >= 2, run.output[-3000:]
    assert "drawn by running the case again" not in run.output
    assert len(list((run.reports_dir / "images").glob("case-*.png"))) == int(drawn.group(1))
    assert not list(run.reports_dir.glob("gw*/answers"))  # handed over, drawn from, removed
