"""The shapes a (model case, backend) pair can take: what the strategies may draw, and
whether that is everything the case declares.

A model case declares its size and batch space and its input dtypes; an artifact may be
narrower (a graph exported at one size, a static batch of 1, an engine profile capped at
batch 4, a graph input that binds float32 only). Strategies draw from the intersection,
so property tests never feed a shape the artifact cannot take; `coverage_gaps` says
what the intersection left out, and the suites fail on it (a case whose artifact takes
one size of the 64-256 it declares has not been tested at 64-256), and the refusal of
shapes outside it is tested separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

from deploy_parity.case import ModelCase
from deploy_parity.contracts import DimRange


@dataclass(frozen=True)
class ShapeBounds:
    min_side: int
    max_side: int
    multiple_of: int
    max_aspect: float
    max_batch: int
    min_batch: int = 1
    fixed_height: Optional[int] = None  # the artifact takes only this size
    fixed_width: Optional[int] = None
    source: str = "model case"
    # Per input, in the case's input order: the dtypes the artifact accepts. None: every
    # dtype the case declares (the torch modules, and graphs the harness exports, one
    # per dtype signature).
    dtypes: Optional[tuple] = None
    # The (height, width) pairs a run draws from, when it may not draw every accepted size:
    # an engine budget on a per-size model (one TensorRT engine per size; see
    # deploy_parity/backends/tensorrt/budget.py). A choice of the harness, not a limit of the
    # artifact: coverage_gaps ignores it, and the records say which sizes were drawn.
    sizes: Optional[tuple] = None
    sizes_reason: str = ""

    def why_not(self, height: int, width: int, batch: int) -> str:
        if not (self.min_batch <= batch <= self.max_batch):
            return f"batch {batch} outside [{self.min_batch}, {self.max_batch}] ({self.source})"
        if self.fixed_height is not None and (height, width) != (self.fixed_height, self.fixed_width):
            return f"size {height}x{width} is not the only accepted size {self.fixed_height}x{self.fixed_width} ({self.source})"
        for label, side in (("height", height), ("width", width)):
            if not (self.min_side <= side <= self.max_side) or side % self.multiple_of:
                return (f"{label} {side} outside [{self.min_side}, {self.max_side}] step {self.multiple_of} "
                        f"({self.source})")
        if max(height, width) / min(height, width) > self.max_aspect + 1e-9:
            return f"aspect of {height}x{width} exceeds {self.max_aspect} ({self.source})"
        return ""

    def input_dtypes(self, case: ModelCase) -> tuple:
        """Per input, the dtypes to draw: those the case declares that the artifact takes,
        in the case's order. Where none is left (the artifact binds a dtype the case never
        declares) the case's own, so the feed's contract check names the mismatch."""
        if self.dtypes is None:
            return tuple(tuple(spec.dtypes) for spec in case.inputs)
        drawn = []
        for spec, accepted in zip(case.inputs, self.dtypes):
            both = tuple(d for d in spec.dtypes if d in accepted)
            drawn.append(both or tuple(spec.dtypes))
        return tuple(drawn)

    def default_dtypes(self, case: ModelCase) -> tuple:
        """One dtype per input for the fixed examples: the case's default where the artifact takes it."""
        return tuple(options[0] for options in self.input_dtypes(case))


def case_bounds(case: ModelCase) -> ShapeBounds:
    s = case.sizes
    fixed = case.spatial_binding == "fixed"
    return ShapeBounds(
        min_side=s.min_side,
        max_side=s.max_side,
        multiple_of=s.multiple_of,
        max_aspect=s.max_aspect,
        max_batch=case.max_batch,
        fixed_height=s.export_height if fixed else None,
        fixed_width=s.export_width if fixed else None,
    )


def onnx_graph_bounds(case: ModelCase, onnx_path) -> ShapeBounds:
    """Bounds narrowed by what a graph declares: static H/W, a static batch, and the
    element type of each input."""
    from deploy_parity.contracts.artifact import onnx_input_metas
    from deploy_parity.export.onnx_exporter import check_onnx

    check_onnx(onnx_path)
    graph = onnx_input_metas(onnx_path)
    bounds = case_bounds(case)
    changes = {"source": f"graph {onnx_path}"}
    changes["dtypes"] = tuple(tuple(graph[spec.name].dtypes) if spec.name in graph else tuple(spec.dtypes)
                              for spec in case.inputs)
    image = next(i for i in case.inputs if i.role == "image")
    meta = graph.get(image.name)
    if meta is None:
        return replace(bounds, **changes)  # the contract check names the missing input at run time
    dims = [d if isinstance(d, int) else None for d in meta.shape]
    if len(dims) == 4 and dims[2] and dims[3]:
        changes.update(fixed_height=dims[2], fixed_width=dims[3])
    if dims and dims[0]:
        changes.update(min_batch=dims[0], max_batch=dims[0])
    return replace(bounds, **changes)


def with_input_dtypes(case: ModelCase, bounds: ShapeBounds, metas) -> ShapeBounds:
    """`bounds` with the dtypes each input binds in `metas` (TensorMeta by input name)."""
    return replace(bounds, dtypes=tuple(tuple(metas[spec.name].dtypes) if spec.name in metas else tuple(spec.dtypes)
                                        for spec in case.inputs))


def per_target_bounds(case: ModelCase, one: ShapeBounds) -> ShapeBounds:
    """What artifacts the harness builds per deploy target accept, together, given what
    `one` of them accepts: there is one per dtype signature, and for a per-size case one
    per size, so neither the dtypes nor (per-size) the size of one narrows the space."""
    changes = {"dtypes": None}
    if case.spatial_binding == "per-size":
        declared = case_bounds(case)
        changes.update(fixed_height=None, fixed_width=None, min_side=declared.min_side,
                       max_side=declared.max_side, multiple_of=declared.multiple_of)
    return replace(one, **changes)


def intersect(a: ShapeBounds, b: ShapeBounds) -> ShapeBounds:
    """Shapes both bounds accept (an engine built from a graph takes no more than either)."""
    fixed = (a.fixed_height, a.fixed_width) if a.fixed_height is not None else (b.fixed_height, b.fixed_width)
    if a.dtypes is None or b.dtypes is None:
        dtypes = a.dtypes if b.dtypes is None else b.dtypes
    else:
        dtypes = tuple(tuple(d for d in x if d in y) for x, y in zip(a.dtypes, b.dtypes))
    return ShapeBounds(
        min_side=max(a.min_side, b.min_side), max_side=min(a.max_side, b.max_side),
        multiple_of=math.lcm(a.multiple_of, b.multiple_of), max_aspect=min(a.max_aspect, b.max_aspect),
        min_batch=max(a.min_batch, b.min_batch), max_batch=min(a.max_batch, b.max_batch),
        fixed_height=fixed[0], fixed_width=fixed[1], source=f"{a.source} and {b.source}", dtypes=dtypes,
    )


def bounds_from_dims(case: ModelCase, height: DimRange | int, width: DimRange | int, batch: DimRange | int,
                     source: str) -> ShapeBounds:
    """Bounds from an engine profile / metadata: ranges or static ints per dimension."""
    base = case_bounds(case)

    def lo_hi(d):
        return (d, d) if isinstance(d, int) else (d.min, d.max)

    (h_lo, h_hi), (w_lo, w_hi), (b_lo, b_hi) = lo_hi(height), lo_hi(width), lo_hi(batch)
    fixed = isinstance(height, int) and isinstance(width, int)
    return ShapeBounds(
        min_side=max(base.min_side, min(h_lo, w_lo)),
        max_side=min(base.max_side, max(h_hi, w_hi)),
        multiple_of=base.multiple_of,
        max_aspect=base.max_aspect,
        min_batch=max(base.min_batch, b_lo),
        max_batch=min(base.max_batch, b_hi),
        fixed_height=height if fixed else None,
        fixed_width=width if fixed else None,
        source=source,
    )


# ---------------------------------------------------------------- declared vs accepted


@dataclass(frozen=True)
class CoverageGap:
    """One way the artifact accepts less than the case declares."""

    input_name: str
    accepted: str  # what the artifact takes, e.g. "is fixed at 1x3x160x160"
    declared: str  # what the case declares, e.g. "sides 64-256"
    export_fix: str  # how to widen the artifact ("" when no one artifact can)
    case_fix: str  # how to narrow the case, if that is what was meant
    shown_by_shape: bool = False  # the fixed shape already in the message says it (a static batch)


def _steps(lo: int, hi: int, multiple: int) -> tuple:
    """The side range as the sizes actually in it: multiples of `multiple` within [lo, hi]."""
    return math.ceil(lo / multiple) * multiple, (hi // multiple) * multiple


def _batch_text(lo: int, hi: int) -> str:
    if lo == hi:
        return f"batch {lo} only"
    return f"batch up to {hi}" if lo == 1 else f"batch {lo}-{hi}"


def coverage_gaps(case: ModelCase, accepted: ShapeBounds) -> list:
    """Everything the case declares that the artifact (its `accepted` bounds) cannot take:
    sizes, batch sizes, input dtypes. Empty when the artifact covers the declaration.

    The one comparison of declared against accepted; `describe_coverage_gaps` words it.
    """
    declared = case_bounds(case)
    image = next(spec for spec in case.inputs if spec.role == "image")
    gaps = []
    batch_gap = accepted.min_batch > declared.min_batch or accepted.max_batch < declared.max_batch
    if accepted.fixed_height is not None:
        size = (accepted.fixed_height, accepted.fixed_width)
        if accepted.min_batch == accepted.max_batch:
            shape = f"{accepted.min_batch}x{image.channels}x{size[0]}x{size[1]}"
        else:
            shape = f"{size[0]}x{size[1]} (HxW)"
        if declared.fixed_height is None:
            lo, hi = _steps(declared.min_side, declared.max_side, declared.multiple_of)
            step = f" in steps of {declared.multiple_of}" if declared.multiple_of > 1 else ""
            gaps.append(CoverageGap(image.name, f"is fixed at {shape}", f"sides {lo}-{hi}{step}",
                                    "export with dynamic height/width axes", "fixed-size"))
        elif size != (declared.fixed_height, declared.fixed_width):
            gaps.append(CoverageGap(
                image.name, f"is fixed at {shape}", f"the fixed size {declared.fixed_height}x{declared.fixed_width}",
                f"export it at {declared.fixed_height}x{declared.fixed_width}", f"export size {size[0]}x{size[1]}"))
    elif declared.fixed_height is None:
        have = _steps(max(declared.min_side, accepted.min_side), min(declared.max_side, accepted.max_side),
                      math.lcm(declared.multiple_of, accepted.multiple_of))
        want = _steps(declared.min_side, declared.max_side, declared.multiple_of)
        if have[0] > want[0] or have[1] < want[1]:
            gaps.append(CoverageGap(image.name, f"takes sides {have[0]}-{have[1]}", f"sides {want[0]}-{want[1]}",
                                    f"build it for sides {want[0]}-{want[1]}",
                                    f"sizes of {have[0]}-{have[1]} in its SizeSpace"))
    if batch_gap:
        # A fully fixed shape already says the batch it takes.
        shown = bool(gaps) and gaps[0].accepted.startswith("is fixed at ") and accepted.min_batch == accepted.max_batch
        gaps.append(CoverageGap(
            image.name, f"takes {_batch_text(accepted.min_batch, accepted.max_batch)}",
            _batch_text(declared.min_batch, declared.max_batch),
            "export with a dynamic batch axis", f"max_batch={max(1, accepted.max_batch)}", shown_by_shape=shown))
    if accepted.dtypes is not None:
        for spec, takes in zip(case.inputs, accepted.dtypes):
            missing = [d for d in spec.dtypes if d not in takes]
            if missing:
                kept = tuple(d for d in spec.dtypes if d in takes) or tuple(takes)
                gaps.append(CoverageGap(
                    spec.name, f"takes {' or '.join(takes)} only", f"input '{spec.name}' as {' or '.join(spec.dtypes)}",
                    "", f"input '{spec.name}' with dtypes={kept!r}"))
    return gaps


def describe_coverage_gaps(case: ModelCase, backend: str, accepted: ShapeBounds, gaps: Optional[list] = None) -> str:
    """The one message for a coverage failure, naming both sides and the fix; "" if none."""
    gaps = coverage_gaps(case, accepted) if gaps is None else gaps
    if not gaps:
        return ""
    by_input: dict = {}
    for gap in gaps:
        if not gap.shown_by_shape:
            by_input.setdefault(gap.input_name, []).append(gap.accepted)
    takes = "; ".join(f"input '{name}' {', '.join(parts)}" for name, parts in by_input.items())
    declares = " and ".join(gap.declared for gap in gaps)
    export_fixes = list(dict.fromkeys(g.export_fix for g in gaps if g.export_fix))
    if {"export with dynamic height/width axes", "export with a dynamic batch axis"} <= set(export_fixes):
        export_fixes = ["export with dynamic axes"] + [f for f in export_fixes if "dynamic" not in f]
    fix = "declare the case " + " / ".join(g.case_fix for g in gaps) + " if that is intended"
    if export_fixes:
        fix = ", ".join(export_fixes) + ", or " + fix
    if any(not g.export_fix for g in gaps):
        fix += " (one artifact binds one dtype per input; without onnx_path/engine_path the harness builds one per dtype)"
    return (f"{case.name} on {backend}: the artifact accepts less than the case declares: {takes} ({accepted.source}) "
            f"but the case declares {declares}; {fix}")
