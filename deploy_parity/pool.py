"""Active runners, built once and reused across examples (exports and sessions are costly)."""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict

import numpy as np

from deploy_parity.backends import Backend, RunnerContext, onnx_for, reference_runner
from deploy_parity.contracts.bounds import (ShapeBounds, case_bounds, intersect, onnx_graph_bounds, per_target_bounds,
                                  with_input_dtypes)
from deploy_parity.case import DeployTarget, ModelCase
from deploy_parity.compare.judge import Judge
from deploy_parity.compare.noise import FLOOR_FIELDS, SHADOW_PRECISION, NoiseFloor, Shadow, measure
from deploy_parity.inputs import FeedCache, array_bytes


class ReferenceAnswers:
    """The reference's outputs for one example, run once and shared by every backend and
    check, with the noise floor per (row precision, factor) measured against its shadow."""

    def __init__(self, outputs: dict):
        self.outputs = outputs
        self.shadows: dict = {}  # shadow precision -> Shadow
        self.noise: dict = {}  # (precision, factor, floors) -> NoiseFloor
        self.jittered: dict = {}  # (jitter, count) -> the reference's answers to jittered feeds

    def nbytes(self) -> int:
        return (array_bytes(self.outputs) + sum(array_bytes(s.outputs or {}) for s in self.shadows.values())
                + sum(array_bytes(run) for runs in self.jittered.values() for run in runs))


class RunnerPool:
    """Keeps up to `capacity` activated candidate runners (LRU) plus one reference per case.

    Per-size graphs mean one runner per tested size; the LRU bound keeps memory flat
    during a long nightly run while Hypothesis's shrinking (which revisits sizes) still
    hits the pool.
    """

    def __init__(self, context: RunnerContext, capacity: int = 24):
        self.context = context
        self.capacity = capacity
        self._runners: OrderedDict = OrderedDict()
        self._references: dict = {}
        self._shadows: dict = {}  # (case, shadow precision) -> activated runner, or why it cannot run
        self._judges: dict = {}
        self._answers: OrderedDict = OrderedDict()
        self._answer_bytes = 0
        self.max_answer_bytes = 128 << 20
        self.reference_runs = 0  # reference inferences actually run (the rest were shared)
        self.shadow_seconds = 0.0
        self.feeds = FeedCache()
        self.activations = 0  # runners activated (candidates and references)
        self.activate_seconds = 0.0  # building modules, loading sessions, exports and engines they wait for
        self.compare_seconds = 0.0  # in the comparators (deploy_parity/check.py adds it)
        self._artifacts: set = set()  # distinct (case, backend, target) activated
        # Inference time of runners already evicted, so the overhead figure stays whole.
        self._retired_seconds = 0.0
        self._retired_calls = 0

    def reference(self, case: ModelCase):
        if case.name not in self._references:
            start = time.perf_counter()
            self._references[case.name] = reference_runner(case).activate()
            self.activate_seconds += time.perf_counter() - start
            self.activations += 1
            self._artifacts.add((case.name, "reference", None))
        return self._references[case.name]

    def judge(self, case: ModelCase, backend: Backend) -> Judge:
        """The one judge of (case, backend): every setting its comparisons use."""
        key = (case.name, backend.name)
        if key not in self._judges:
            self._judges[key] = Judge.for_case(case, backend.name, backend.precision)
        return self._judges[key]

    def answers(self, case: ModelCase, example) -> ReferenceAnswers:
        """The reference's outputs for `example`, computed once for every backend and check."""
        key = (case.name, example.height, example.width, example.batch, example.seed, tuple(example.dtypes))
        answers = self._answers.get(key)
        if answers is not None:
            self._answers.move_to_end(key)
            return answers
        answers = ReferenceAnswers(self.reference(case).infer(self.feed(case, example)))
        for array in answers.outputs.values():  # shared by every backend: nobody may write into it
            if isinstance(array, np.ndarray):
                array.flags.writeable = False
        self.reference_runs += 1
        self._answers[key] = answers
        self._answer_bytes += answers.nbytes()
        while self._answer_bytes > self.max_answer_bytes and len(self._answers) > 1:
            _, old = self._answers.popitem(last=False)
            self._answer_bytes -= old.nbytes()
        return answers

    def noise(self, case: ModelCase, example, judge: Judge) -> NoiseFloor:
        """The noise floor of `example` for the judge's precision: the reference against its
        shadow (float64 for fp32 rows), run once per example and shared."""
        answers = self.answers(case, example)
        floors = {quantity: float(judge.row(quantity[0])[name]) for quantity, name in FLOOR_FIELDS.items()}
        peak_gap = float(judge.row("keypoints")["peak_gap"])
        key = (judge.precision, judge.noise_factor, peak_gap, tuple(sorted(floors.items())))
        if key not in answers.noise:
            shadow_precision = SHADOW_PRECISION.get(judge.precision)
            shadow = Shadow(None)
            if shadow_precision is not None:
                if shadow_precision not in answers.shadows:
                    with self._counting(answers):
                        answers.shadows[shadow_precision] = self._shadow(case, example, shadow_precision)
                shadow = answers.shadows[shadow_precision]
            answers.noise[key] = measure(case, answers.outputs, shadow, (example.height, example.width),
                                         example.batch, judge.precision, judge.noise_factor,
                                         peak_gap_floor=peak_gap, floors=floors)
        return answers.noise[key]

    def jittered(self, case: ModelCase, example, jitter: float, count: int = 2) -> list:
        """The reference's answers to `count` copies of the example's feed whose float inputs
        are multiplied by (1 + jitter x N(0, 1)), seeded by the example: how far the model's
        own answer moves under an input change the size of two runtimes' resize rounding.
        Run only where a comparison fails (deploy_parity/check.py); [] when no input is a
        float image (an integer image cannot change by so little)."""
        answers = self.answers(case, example)
        key = (jitter, count)
        if key not in answers.jittered:
            feed = self.feed(case, example)
            images = [spec.name for spec, dtype in zip(case.inputs, example.dtypes)
                      if spec.role == "image" and np.dtype(dtype).kind == "f"]
            runs = []
            if images:
                rng = np.random.default_rng([example.seed, example.height, example.width, example.batch])
                for _ in range(count):
                    moved = dict(feed)
                    for name in images:
                        moved[name] = (feed[name] * (1.0 + jitter * rng.standard_normal(feed[name].shape))).astype(
                            feed[name].dtype)
                    runs.append(self.reference(case).infer(moved))
            with self._counting(answers):
                answers.jittered[key] = runs
        return answers.jittered[key]

    @contextlib.contextmanager
    def _counting(self, answers: ReferenceAnswers):
        """Keep the answers' byte count (the bound on what is kept) in step with what is added."""
        before = answers.nbytes()
        yield
        self._answer_bytes += answers.nbytes() - before

    def _shadow(self, case: ModelCase, example, precision: str) -> Shadow:
        """The reference's answer to the feed in `precision`, or why it cannot be had: a
        module that cannot run in it (an op without a float64 kernel) keeps the table row."""
        key = (case.name, precision)
        start = time.perf_counter()
        try:
            if key not in self._shadows:
                try:
                    self._shadows[key] = reference_runner(case, precision).activate()
                except Exception as error:  # noqa: BLE001 - recorded in every comparison of the case
                    self._shadows[key] = f"the reference cannot be built in {precision}: {type(error).__name__}: " \
                                         f"{str(error).splitlines()[0] if str(error) else ''}"
            runner = self._shadows[key]
            if isinstance(runner, str):
                return Shadow(precision, None, runner)
            try:
                return Shadow(precision, runner.infer(self.feed(case, example)))
            except Exception as error:  # noqa: BLE001 - as above
                first = str(error).splitlines()[0] if str(error) else ""
                return Shadow(precision, None, f"the reference cannot run in {precision}: {type(error).__name__}: "
                                               f"{first}")
        finally:
            self.shadow_seconds += time.perf_counter() - start

    def retire(self, case_name: str, backend_name: str) -> None:
        """Deactivate and forget the candidate runners of (case, backend), every target: the
        mutation self-test swaps the graph under one case name, keeping the reference, its
        shadows and answers (computed once per example for every mutant)."""
        for key in [k for k in self._runners if k[0] == case_name and k[1] == backend_name]:
            self._retire(self._runners.pop(key))

    def get(self, case: ModelCase, backend: Backend, target: DeployTarget):
        key = (case.name, backend.name, target)
        if key in self._runners:
            self._runners.move_to_end(key)
            return self._runners[key]
        start = time.perf_counter()
        runner = backend.factory(case, target, self.context).activate()
        self.activate_seconds += time.perf_counter() - start
        self.activations += 1
        self._artifacts.add(key)
        self._runners[key] = runner
        while len(self._runners) > self.capacity:
            _, old = self._runners.popitem(last=False)
            self._retire(old)
        return runner

    def bounds(self, case: ModelCase, backend: Backend) -> ShapeBounds:
        """What the artifact accepts (accepted_bounds), with the sizes a run draws from when
        the engine budget limits a per-size model on an engine-building backend."""
        from deploy_parity.backends.tensorrt.budget import within_engine_budget

        return within_engine_budget(case, backend, self.accepted_bounds(case, backend), self.context.engine_budget)

    def accepted_bounds(self, case: ModelCase, backend: Backend) -> ShapeBounds:
        """The shapes and dtypes this backend's artifact accepts, read from the artifact
        itself where it can be narrower than the case (a fixed-size or user-supplied graph,
        an engine profile), so strategies never draw what the artifact cannot take.
        `deploy_parity.contracts.bounds.coverage_gaps` compares this with what the case declares.

        The user's own artifact (onnx_path, engine_path) is one file for every size and
        dtype, so what it takes is all that can be tested. Artifacts the harness builds
        are one per deploy target (per dtype signature; per size for a per-size case):
        one of them stands for its own size and batch range only."""
        if backend.artifact == "torch":
            return case_bounds(case)
        target = case.deploy_target(case.sizes.export_height or case.sizes.min_side,
                                    case.sizes.export_width or case.sizes.min_side, case.default_dtypes())
        if backend.artifact == "engine":
            runner = self.get(case, backend, target)
            if hasattr(runner, "shape_bounds"):
                engine = with_input_dtypes(case, runner.shape_bounds(case), runner.get_input_metadata())
                if case.engine_path is not None:
                    return engine
                engine = per_target_bounds(case, engine)  # built per target from an ONNX graph
                if case.onnx_path is not None:  # ... the user's, which bounds every engine built from it
                    return intersect(engine, onnx_graph_bounds(case, case.onnx_path))
                return engine
        if backend.precision == "int8" and case.int8_onnx_path is not None:  # the user's own INT8 graph
            return onnx_graph_bounds(case, case.int8_onnx_path)
        if case.onnx_path is not None:
            return onnx_graph_bounds(case, case.onnx_path)
        if case.spatial_binding == "fixed":
            return per_target_bounds(case, onnx_graph_bounds(case, onnx_for(case, target, self.context)))
        return case_bounds(case)

    def _retire(self, runner):
        self._retired_seconds += runner.inference_seconds
        self._retired_calls += runner.inference_calls
        runner.deactivate()

    def _all_runners(self) -> list:
        shadows = [r for r in self._shadows.values() if not isinstance(r, str)]
        return list(self._runners.values()) + list(self._references.values()) + shadows

    def inference_seconds(self) -> float:
        runners = self._all_runners()
        return self._retired_seconds + sum(r.inference_seconds for r in runners)

    def inference_calls(self) -> int:
        runners = self._all_runners()
        return self._retired_calls + sum(r.inference_calls for r in runners)

    def feed(self, case: ModelCase, example) -> dict:
        """The feed of `example` (a ParityExample), rendered once and shared (read-only)."""
        return self.feeds.get(case, example.height, example.width, example.batch, example.seed, example.dtypes)

    def figures(self) -> dict:
        """Reuse figures for the overhead report: feeds rendered vs distinct, activations vs artifacts."""
        return {**self.feeds.figures(), "runner_activations": self.activations,
                "distinct_artifacts": len(self._artifacts), "activate_seconds": round(self.activate_seconds, 3),
                "compare_seconds": round(self.compare_seconds, 3), "reference_runs": self.reference_runs,
                "shadow_seconds": round(self.shadow_seconds, 3)}

    def close(self):
        for runner in self._all_runners():
            self._retire(runner)
        self._runners.clear()
        self._references.clear()
        self._shadows.clear()
        self._answers.clear()
        self._answer_bytes = 0
