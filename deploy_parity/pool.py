"""Active runners, built once and reused across examples (exports and sessions are costly)."""

from __future__ import annotations

import time
from collections import OrderedDict

from deploy_parity.backends import Backend, RunnerContext, onnx_for, reference_runner
from deploy_parity.contracts.bounds import (ShapeBounds, case_bounds, intersect, onnx_graph_bounds, per_target_bounds,
                                  with_input_dtypes)
from deploy_parity.case import DeployTarget, ModelCase
from deploy_parity.inputs import FeedCache


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
        if case.onnx_path is not None:
            return onnx_graph_bounds(case, case.onnx_path)
        if case.spatial_binding == "fixed":
            return per_target_bounds(case, onnx_graph_bounds(case, onnx_for(case, target, self.context)))
        return case_bounds(case)

    def _retire(self, runner):
        self._retired_seconds += runner.inference_seconds
        self._retired_calls += runner.inference_calls
        runner.deactivate()

    def inference_seconds(self) -> float:
        runners = list(self._runners.values()) + list(self._references.values())
        return self._retired_seconds + sum(r.inference_seconds for r in runners)

    def inference_calls(self) -> int:
        runners = list(self._runners.values()) + list(self._references.values())
        return self._retired_calls + sum(r.inference_calls for r in runners)

    def feed(self, case: ModelCase, example) -> dict:
        """The feed of `example` (a ParityExample), rendered once and shared (read-only)."""
        return self.feeds.get(case, example.height, example.width, example.batch, example.seed, example.dtypes)

    def figures(self) -> dict:
        """Reuse figures for the overhead report: feeds rendered vs distinct, activations vs artifacts."""
        return {**self.feeds.figures(), "runner_activations": self.activations,
                "distinct_artifacts": len(self._artifacts), "activate_seconds": round(self.activate_seconds, 3),
                "compare_seconds": round(self.compare_seconds, 3)}

    def close(self):
        for runner in list(self._runners.values()) + list(self._references.values()):
            self._retire(runner)
        self._runners.clear()
        self._references.clear()
