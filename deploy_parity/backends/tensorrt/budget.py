"""How many TensorRT engines a run builds, planned before it starts and held to a budget.

An engine is built per deploy target (deploy_parity.case.DeployTarget) and TensorRT
backend (trt-fp32, trt-tf32, trt-fp16, trt-int8; onnxrt-trt builds its own in ONNX
Runtime's cache, one per graph likewise):

  dynamic   one graph for every size: one engine per dtype signature, its optimisation
            profile covering every accepted size and batch (sizes are drawn inside it)
  fixed     one size: one engine per dtype signature
  per-size  one graph per size (the model bakes its size in): one engine per size drawn
            and dtype signature. pose-rtmo accepts 81 sizes; a nightly drawing them all on
            three TensorRT backends could build hundreds of engines. Under a budget of B
            engines per model and backend, such a run draws its sizes from a fixed spread
            of B // signatures sizes (the export size, the square control, rectangles both
            ways, the extremes: deploy_parity.strategies.spread_sizes); the record of every
            check says which sizes, and the plan says so before the run.

Dtype signatures are never narrowed (that would skip what the case declares); a dynamic
model with more signatures than the budget is planned over budget, and says so.
A user's own .engine is built by no one here: 0.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Optional

from deploy_parity.contracts.bounds import ShapeBounds, case_bounds
from deploy_parity.errors import HarnessError

BUDGET_ENV = "PARITY_ENGINE_BUDGET"
DEFAULT_BUDGET = 16  # engines per model and TensorRT backend in one run (pose-rtmo: 8 sizes x 2 dtype signatures)


def engine_budget(value=None) -> int:
    """The budget from --engine-budget / PARITY_ENGINE_BUDGET (default 8); a clear error otherwise."""
    text = value if value is not None else os.environ.get(BUDGET_ENV)
    if text is None or str(text).strip() == "":
        return DEFAULT_BUDGET
    try:
        budget = int(str(text).strip())
    except ValueError:
        budget = 0
    if budget < 1:
        raise HarnessError(f"engine budget {text!r} (--engine-budget or {BUDGET_ENV}): expected a whole number of "
                           "engines per model and TensorRT backend, at least 1")
    return budget


def builds_engines(backend) -> bool:
    """The backend builds a TensorRT engine per deploy target (Polygraphy's, or ONNX Runtime's provider)."""
    return backend.artifact == "engine" or backend.name == "onnxrt-trt"


def dtype_signatures(case, bounds: Optional[ShapeBounds] = None) -> int:
    """How many dtype signatures (one dtype per input) a run draws: one engine each."""
    bounds = bounds or case_bounds(case)
    return math.prod(len(options) for options in bounds.input_dtypes(case))


def all_sizes(bounds: ShapeBounds) -> int:
    """How many (height, width) pairs the bounds accept."""
    if bounds.fixed_height is not None:
        return 1
    m = bounds.multiple_of
    sides = range(-(-bounds.min_side // m) * m, bounds.max_side // m * m + 1, m)
    return sum(1 for h in sides for w in sides if max(h, w) <= bounds.max_aspect * min(h, w) + 1e-9)


def budget_sizes(case, bounds: ShapeBounds, count: int) -> tuple:
    """`count` accepted sizes, spread over the space, the export size first (Hypothesis
    shrinks toward it) and the square control second (the suite's explicit examples)."""
    from deploy_parity.strategies import spread_sizes, square_control

    square = square_control(case, bounds)
    sizes = []
    for size in [*spread_sizes(case, bounds)[:1], (square.height, square.width), *spread_sizes(case, bounds)[1:]]:
        if size not in sizes and not bounds.why_not(*size, bounds.min_batch):
            sizes.append(size)
    m = bounds.multiple_of
    lo, hi = -(-bounds.min_side // m) * m, bounds.max_side // m * m
    # More than the spread gives: a grid ever finer (halves, quarters, ...), rows before columns.
    parts = 2
    while len(sizes) < count and parts <= 64:
        points = sorted({lo + (hi - lo) * i // parts // m * m for i in range(parts + 1)})
        for h in points:
            for w in points:
                if len(sizes) < count and (h, w) not in sizes and not bounds.why_not(h, w, bounds.min_batch):
                    sizes.append((h, w))
        parts *= 2
    return tuple(sizes[:count])


@dataclass(frozen=True)
class EnginePlan:
    """What one (model case, backend) will build at most in a run."""

    model: str
    backend: str
    binding: str  # dynamic, fixed, per-size, or "user engine"
    engines: int  # at most, in one run (cache hits cost no build)
    signatures: int
    sizes: tuple  # per-size: the sizes drawn; else ()
    accepted_sizes: int  # how many sizes the case accepts
    budget: int

    @property
    def over_budget(self) -> bool:
        return self.engines > self.budget

    def describe(self) -> str:
        if self.binding == "user engine":
            return "the case's own .engine: nothing built"
        sig = f"{self.signatures} dtype signature{'s' if self.signatures != 1 else ''}"
        if self.binding == "per-size":
            sizes = ", ".join(f"{h}x{w}" for h, w in self.sizes)
            return (f"one engine per size: {len(self.sizes)} of the {self.accepted_sizes} sizes the case accepts "
                    f"(engine budget {self.budget}) x {sig}; sizes drawn from {sizes}")
        what = "every size and batch inside one optimisation profile" if self.binding == "dynamic" else "its one size"
        line = f"one engine per dtype signature ({sig}), each covering {what}"
        if self.over_budget:
            line += (f"; OVER the budget of {self.budget}: dtypes are never narrowed, raise --engine-budget to "
                     f"{self.engines} or declare fewer dtypes")
        return line


def _user_engine(case, backend) -> bool:
    """The backend loads the case's own .engine: it builds none."""
    return case.engine_path is not None and backend.artifact == "engine"


def plan_engines(case, backend, budget: int) -> Optional[EnginePlan]:
    """The plan for (case, backend), or None when the backend builds no engine."""
    if not builds_engines(backend):
        return None
    bounds = case_bounds(case)
    signatures = dtype_signatures(case, bounds)
    accepted = all_sizes(bounds)
    if _user_engine(case, backend):
        return EnginePlan(case.name, backend.name, "user engine", 0, signatures, (), accepted, budget)
    if case.spatial_binding != "per-size":
        return EnginePlan(case.name, backend.name, case.spatial_binding, signatures, signatures, (), accepted, budget)
    sizes = budget_sizes(case, bounds, max(1, budget // signatures))
    return EnginePlan(case.name, backend.name, "per-size", len(sizes) * signatures, signatures, sizes, accepted,
                      budget)


def within_engine_budget(case, backend, bounds: ShapeBounds, budget: int) -> ShapeBounds:
    """`bounds` with the sizes a per-size model draws on an engine-building backend (else
    unchanged): the spread plan_engines plans, drawn from what the artifact accepts."""
    if (case.spatial_binding != "per-size" or not builds_engines(backend) or bounds.fixed_height is not None
            or _user_engine(case, backend)):
        return bounds
    count = max(1, budget // dtype_signatures(case))
    sizes = tuple(size for size in budget_sizes(case, bounds, count) if not bounds.why_not(*size, 1))
    if not sizes:
        return bounds
    return replace(bounds, sizes=sizes, sizes_reason=(
        f"engine budget {budget}: {len(sizes)} of {all_sizes(case_bounds(case))} sizes (one {backend.name} engine "
        "per size; --engine-budget)"))


def format_plan(plans: list, budget: int) -> str:
    """The dry run's table: per model and backend, engines at most and why; totals."""
    lines = [f"TensorRT engine plan: at most {budget} engines per model and backend (--engine-budget or {BUDGET_ENV}); "
             "cache hits build nothing"]
    if not plans:
        return "\n".join(lines + ["no selected backend builds TensorRT engines (trt-*, onnxrt-trt): nothing to build"])
    width = max(len(p.model) for p in plans)
    bwidth = max(len(p.backend) for p in plans)
    for plan in plans:
        flag = "  OVER BUDGET" if plan.over_budget else ""
        lines.append(f"{plan.model:{width}s}  {plan.backend:{bwidth}s}  {plan.binding:11s} {plan.engines:4d} engine{'s' if plan.engines != 1 else ' '}  "
                     f"{plan.describe()}{flag}")
    per_backend: dict = {}
    for plan in plans:
        per_backend[plan.backend] = per_backend.get(plan.backend, 0) + plan.engines
    lines.append("total: " + ", ".join(f"{b} {n}" for b, n in per_backend.items())
                 + f"; {sum(per_backend.values())} engines at most")
    return "\n".join(lines)
