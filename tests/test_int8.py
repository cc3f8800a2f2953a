"""INT8 on ONNX Runtime CPU judged by task agreement (deploy_parity/export/quantize.py,
deploy_parity/compare/agreement.py): the quantized graph cached and verified like
exports, a user's own INT8 graph taken as it is, budgets read from the one table, and the
calibration mistakes users make failing where a correct calibration passes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from deploy_parity.backends import BACKENDS, RunnerContext, onnx_for
from deploy_parity.check import check_agreement
from deploy_parity.compare.tolerances import Tolerance, lookup
from deploy_parity.compare.verdict import Verdict
from deploy_parity.export.onnx_exporter import sidecar_path
from deploy_parity.export.quantize import (calibration_feeds, calibration_for, quantize_graph, quantized_graph,
                                           sort_topologically, why_it_cannot_open)
from deploy_parity.registry import build_registry
from deploy_parity.strategies import agreement_examples

INT8 = BACKENDS["onnxrt-cpu-int8"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def runner_context(cache):
    """The module's cache under every pool and context (tests/conftest.py): the export and
    the quantized graphs are made once for the module, runners afresh for each test."""
    return RunnerContext(cache_dir=cache)


@pytest.fixture(scope="module")
def detr():
    return build_registry(wanted=["detr-tiny"]).get("detr-tiny")


def agreement(pool, case):
    return check_agreement(pool, case, INT8, agreement_examples(case, pool.bounds(case, INT8)))


def user_int8_graph(case, context, tmp_path, name, transform):
    """What a user's own pipeline made: the same export, quantized on feeds it changed."""
    target = case.deploy_target(None, None, case.default_dtypes()) if case.spatial_binding == "dynamic" else None
    fp32 = onnx_for(case, target, context)
    calibration = replace(calibration_for(case, target), transform=transform, name=name)
    path = tmp_path / f"{name}.onnx"
    quantize_graph(fp32, calibration_feeds(case, target, calibration), path)
    sort_topologically(path)
    return path


def test_the_quantized_graph_is_cached_keyed_and_verified(detr, runner_context):
    target = detr.deploy_target(None, None, detr.default_dtypes())
    first = quantized_graph(detr, target, runner_context)
    stamp = first.stat().st_mtime_ns
    assert quantized_graph(detr, target, runner_context) == first and first.stat().st_mtime_ns == stamp  # a hit
    # Another calibration set is another entry.
    other = replace(calibration_for(detr, target), transform=lambda feed: feed, name="same feeds, other name")
    assert quantized_graph(detr, target, runner_context, other) == first  # the feeds are what is keyed, not the name
    shifted = replace(calibration_for(detr, target), sizes=calibration_for(detr, target).sizes[:8])
    assert quantized_graph(detr, target, runner_context, shifted) != first
    # An entry edited after it was written is quantized again, with a warning.
    first.write_bytes(first.read_bytes()[:-10])
    with pytest.warns(Warning, match="not trusted"):
        again = quantized_graph(detr, target, runner_context)
    assert again == first and why_it_cannot_open(again) == "" and sidecar_path(again).is_file()


def test_a_correct_int8_graph_keeps_the_task_and_the_record_carries_the_distribution(detr, pool):
    result = agreement(pool, detr)
    assert result.verdict == Verdict.PASS, result.summary()
    [boxes] = result.comparisons
    budget = lookup("agreement", "onnxrt-cpu-int8", "int8")
    assert boxes.metrics["ap"] >= budget["box_ap"] and boxes.tolerance_source == budget.source
    for key in ("corner_px_median", "corner_px_p95", "corner_px_max", "score_diff_p95", "one_side_only"):
        assert key in boxes.metrics, key  # the per-instance figures, reported beside the task metric
    assert len(boxes.metrics["per_size_ap"]) >= 4  # rectangles and squares, not one size


def test_the_budget_is_the_tables_and_a_case_may_override_it_with_a_reason(detr, pool):
    strict = replace(detr, judging=replace(detr.judging, tolerance_overrides={
        "agreement": Tolerance({"box_ap": 0.999}, "a test of the override")}))
    result = agreement(pool, strict)
    assert result.verdict == Verdict.FAIL, result.summary()
    assert "below the budget 0.999" in result.comparisons[0].message
    assert "override by model detr-tiny" in result.comparisons[0].tolerance_source


@pytest.mark.parametrize("mistake, transform", [
    ("0-255 range", lambda feed: {k: (v * 255.0 if v.ndim == 4 else v) for k, v in feed.items()}),
    ("blank images", lambda feed: {k: (np.zeros_like(v) if v.ndim == 4 else v) for k, v in feed.items()}),
])
def test_calibration_mistakes_fail_the_budget_and_say_where(detr, runner_context, pool, tmp_path, mistake,
                                                            transform):
    path = user_int8_graph(detr, runner_context, tmp_path, mistake.replace(" ", "_"), transform)
    users = replace(detr, name="users-detr", int8_onnx_path=path)
    result = agreement(pool, users)
    assert result.verdict == Verdict.FAIL, result.summary()
    message = result.comparisons[0].message
    assert "below the budget 0.5" in message and "worst at " in message, message
    assert result.comparisons[0].metrics["worst_size"] in message


def test_a_users_own_int8_graph_is_run_as_it_is(detr, runner_context, pool, make_pool, tmp_path):
    path = user_int8_graph(detr, runner_context, tmp_path, "users_correct", None)
    users = replace(detr, name="users-detr-ok", int8_onnx_path=path)
    example = agreement_examples(users, pool.bounds(users, INT8))[0]
    runner = pool.get(users, INT8, users.deploy_target(example.height, example.width, example.dtypes))
    assert Path(runner.onnx_path) == path
    assert agreement(make_pool(), users).verdict == Verdict.PASS  # a pool of its own, as a new run


def test_a_graph_onnx_runtime_cannot_open_is_an_error_not_a_crash(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph at all")
    why = why_it_cannot_open(broken)
    assert why.startswith("ONNX Runtime failed while opening it (exit status 1)"), why
