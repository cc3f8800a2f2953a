"""The shapes a (model case, backend) pair can take: what the strategies may draw.

A model case declares its size and batch space; an artifact may be narrower (a graph
exported at one size, an engine profile capped at batch 4). Strategies draw from the
intersection, so property tests never feed a shape the artifact cannot take, and the
refusal of shapes outside it is tested separately.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """Bounds narrowed by what a user-supplied graph declares (static H/W or batch)."""
    import onnx

    from deploy_parity.export.onnx_exporter import check_onnx

    check_onnx(onnx_path)
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    bounds = case_bounds(case)
    image = next(i for i in case.inputs if i.role == "image")
    value = next((v for v in graph.input if v.name == image.name), None)
    if value is None:
        return bounds  # the contract check names the missing input at run time
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    changes = {"source": f"graph {onnx_path}"}
    if len(dims) == 4 and dims[2] and dims[3]:
        changes.update(fixed_height=dims[2], fixed_width=dims[3])
    if dims and dims[0]:
        changes.update(min_batch=dims[0], max_batch=dims[0])
    return ShapeBounds(**{**bounds.__dict__, **changes})


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
