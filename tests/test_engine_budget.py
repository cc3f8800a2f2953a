"""The engine budget: planned before a run, held during it, and reported after.

No GPU here: the plan and the draws are checked with the real backends' definitions and
the real strategies; the engine cache's counts with placeholder bytes (nothing claims
they are engines)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from deploy_parity.backends import BACKENDS
from deploy_parity.backends.tensorrt.budget import all_sizes, engine_budget, plan_engines, within_engine_budget
from deploy_parity.contracts.bounds import case_bounds
from deploy_parity.errors import HarnessError
from deploy_parity.registry import build_registry
from deploy_parity.strategies import agreement_examples, export_size_example, parity_examples, square_control
from tests.suite_runs import run_pytest

REGISTRY = build_registry(wanted=["pose-rtmo", "detr-tiny", "mask-rcnn-fixed"])
POSE, DETR, FIXED = (REGISTRY.get(n) for n in ("pose-rtmo", "detr-tiny", "mask-rcnn-fixed"))
ENGINE_BACKENDS = ["trt-fp32", "trt-tf32", "trt-fp16", "onnxrt-trt"]


def _targets(case, bounds, examples=300, min_batch=1) -> set:
    seen = set()

    @settings(max_examples=examples, derandomize=True, database=None)
    @given(parity_examples(case, bounds, min_batch))
    def draw(example):
        seen.add(case.deploy_target(example.height, example.width, example.dtypes))

    draw()
    return seen


@pytest.mark.parametrize("backend", ENGINE_BACKENDS)
def test_a_per_size_model_draws_within_the_budget_on_engine_backends(backend):
    budget = 16
    plan = plan_engines(POSE, BACKENDS[backend], budget)
    assert plan.binding == "per-size" and plan.engines <= budget and plan.signatures == 2
    bounds = within_engine_budget(POSE, BACKENDS[backend], case_bounds(POSE), budget)
    targets = _targets(POSE, bounds) | _targets(POSE, bounds, min_batch=2)
    assert len(targets) <= budget, f"{len(targets)} engines for a budget of {budget}"
    assert {(t.height, t.width) for t in targets} <= set(bounds.sizes)
    # The suite's explicit examples and the task-agreement set are inside the budget too.
    for example in (square_control(POSE, bounds), export_size_example(POSE, bounds),
                    *agreement_examples(POSE, bounds)):
        assert (example.height, example.width) in bounds.sizes
    assert bounds.sizes[0] == (POSE.sizes.export_height, POSE.sizes.export_width)  # Hypothesis shrinks toward it
    assert "engine budget 16" in bounds.sizes_reason


def test_without_the_budget_a_per_size_model_needs_an_engine_for_almost_every_draw():
    """What the budget prevents: the unrestricted draws ask for many more engines."""
    assert len(_targets(POSE, case_bounds(POSE))) > 16
    assert all_sizes(case_bounds(POSE)) > 16


@pytest.mark.parametrize("backend", ["torch-cuda-fp32", "onnxrt-cuda", "onnxrt-cpu", "torch-cpu"])
def test_backends_that_build_no_engine_draw_every_accepted_size(backend):
    assert plan_engines(POSE, BACKENDS[backend], 16) is None
    assert within_engine_budget(POSE, BACKENDS[backend], case_bounds(POSE), 16) == case_bounds(POSE)


def test_dynamic_and_fixed_models_build_one_engine_per_dtype_signature_and_keep_every_size():
    detr = plan_engines(DETR, BACKENDS["trt-fp16"], 16)
    assert (detr.binding, detr.engines, detr.signatures) == ("dynamic", 2, 2)
    assert within_engine_budget(DETR, BACKENDS["trt-fp16"], case_bounds(DETR), 16).sizes is None
    fixed = plan_engines(FIXED, BACKENDS["trt-fp32"], 16)
    assert (fixed.binding, fixed.engines) == ("fixed", 1)
    over = plan_engines(DETR, BACKENDS["trt-fp32"], 1)
    assert over.over_budget and "dtypes are never narrowed" in over.describe()


@pytest.mark.parametrize("text", ["0", "-3", "many", "2.5"])
def test_a_bad_budget_is_one_line_naming_the_option(text):
    with pytest.raises(HarnessError, match=r"--engine-budget .*at least 1"):
        engine_budget(text)
    assert engine_budget(None) == 16 and engine_budget("4") == 4


def _plan(*args):
    return run_pytest("--engine-plan", "--backend", "trt-fp32,trt-fp16,onnxrt-trt,torch-cuda-fp32", *args)


def test_the_dry_run_prints_the_plan_for_the_default_zoo_and_builds_nothing(tmp_path):
    done = _plan("--parity-cache-dir", str(tmp_path / "cache"))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("TensorRT engine plan: at most 16 engines per model and backend")
    pose = [line for line in lines if line.startswith("pose-rtmo") and " trt-fp16 " in line]
    assert len(pose) == 1 and "16 engines" in pose[0] and "8 of the 77 sizes" in pose[0]
    assert not any(" torch-cuda-fp32 " in line for line in lines)  # builds no engine: not in the plan
    assert lines[-1].startswith("total: trt-fp32 ") and "engines at most" in lines[-1]
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.onnx"))


def test_a_plan_over_the_budget_exits_1_and_a_bad_budget_is_a_usage_error():
    over = _plan("--engine-budget", "1", "--model", "detr-tiny")
    assert over.returncode == 1 and "OVER BUDGET" in over.stdout
    bad = _plan("--engine-budget", "none")
    assert bad.returncode == 4 and "engine budget 'none'" in bad.stderr


def test_engine_builds_and_cache_hits_reach_the_run_figures(runner_context, monkeypatch):
    from deploy_parity.backends import tensorrt as trt_backends
    from deploy_parity.backends.tensorrt.engine_cache import EngineEnv, make_key
    from deploy_parity.backends.tensorrt.profiles import EngineProfile, ShapeRange
    from deploy_parity.benchmarks.process import measure_process

    monkeypatch.setattr(trt_backends, "_CACHES", {})
    cache = trt_backends.session_engine_cache(runner_context)
    key = make_key("c" * 64, "fp16", {"fp16": True}, [EngineProfile((("images", ShapeRange((1, 3, 64, 64),
                   (1, 3, 64, 64), (1, 3, 64, 64))),))], EngineEnv("10.16.1", "NVIDIA H100 80GB HBM3"))
    for _ in range(3):
        cache.get_or_build(key, lambda: b"placeholder bytes, not an engine")
    times = measure_process(None, 0.0, 1.0)
    assert (times.engine_builds, times.engine_cache_hits) == (1, 2)
