"""TensorRT optimization profiles, both ways, in pure Python.

Forward: a model case's size/batch space (its ShapeBounds) and deploy target give one
profile, min/opt/max per input, that the engine is built with. Dimensions the ONNX
graph fixes (a per-size export, a static batch) are pinned to the graph's value.

Backward: the shapes an engine reports (static dims, and the profile's min/max for the
dynamic ones) become the runner's TensorMeta (so `check_feed` refuses a shape outside
the profile with UnsupportedShapeError) and ShapeBounds (so strategies never draw a
shape the engine cannot take; bug classes 3 and 5).

A profile cannot say "multiples of 32" or "aspect <= 4": those stay in the case's
contract, and the backward direction copies them from the case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

from deploy_parity.contracts.bounds import ShapeBounds, bounds_from_dims, case_bounds
from deploy_parity.case import DeployTarget, ModelCase
from deploy_parity.contracts import DimRange, TensorMeta
from deploy_parity.errors import HarnessError

# ---------------------------------------------------------------------------- forward


@dataclass(frozen=True)
class ShapeRange:
    """min/opt/max shapes of one input (Polygraphy's ShapeTuple, without Polygraphy)."""

    min: tuple
    opt: tuple
    max: tuple

    def __post_init__(self):
        for field in ("min", "opt", "max"):
            object.__setattr__(self, field, tuple(int(d) for d in getattr(self, field)))
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise HarnessError(f"profile shapes of different ranks: {self}")
        for lo, mid, hi in zip(self.min, self.opt, self.max):
            if not (1 <= lo <= mid <= hi):
                raise HarnessError(f"profile shapes need 1 <= min <= opt <= max per dimension, got {self}")

    def is_static(self) -> bool:
        return self.min == self.max

    def as_record(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    def __str__(self):
        return f"min={self.min} opt={self.opt} max={self.max}"


@dataclass(frozen=True)
class EngineProfile:
    """One optimization profile: (input name, ShapeRange) in the case's input order."""

    inputs: tuple

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple((str(n), r) for n, r in self.inputs))
        names = [n for n, _ in self.inputs]
        if len(set(names)) != len(names):
            raise HarnessError(f"profile names an input twice: {names}")
        if len({r.min[0] for _, r in self.inputs}) > 1 or len({r.max[0] for _, r in self.inputs}) > 1:
            # TensorRT would accept it, but no feed could satisfy every input at once.
            raise HarnessError(f"inputs disagree on the batch range: {self}")

    def __getitem__(self, name: str) -> ShapeRange:
        for key, shape_range in self.inputs:
            if key == name:
                return shape_range
        raise KeyError(f"profile has no input {name!r}; it has {self.names()}")

    def names(self) -> list:
        return [n for n, _ in self.inputs]

    def as_record(self) -> dict:
        """JSON-able, ordered as the inputs: what the engine cache key hashes."""
        return {name: shape_range.as_record() for name, shape_range in self.inputs}

    def ort_trt_options(self) -> dict:
        """The three profile options of ONNX Runtime's TensorRT execution provider."""

        def spell(which):
            return ",".join(f"{name}:{'x'.join(str(d) for d in getattr(r, which))}" for name, r in self.inputs)

        return {
            "trt_profile_min_shapes": spell("min"),
            "trt_profile_opt_shapes": spell("opt"),
            "trt_profile_max_shapes": spell("max"),
        }

    def __str__(self):
        return "; ".join(f"{name}: {r}" for name, r in self.inputs)


def _side_range(bounds: ShapeBounds, preferred: int) -> tuple:
    """(min, opt, max) for a dynamic side: the bounds rounded inwards to multiple_of."""
    m = bounds.multiple_of
    lo = math.ceil(bounds.min_side / m) * m
    hi = (bounds.max_side // m) * m
    if lo > hi:
        raise HarnessError(f"no side length in [{bounds.min_side}, {bounds.max_side}] is a multiple of {m}")
    if preferred and lo <= preferred <= hi:
        opt = preferred
    else:
        opt = max(lo, (((lo + hi) // 2) // m) * m)
    return lo, opt, hi


def derive_profile(
    case: ModelCase,
    target: DeployTarget,
    bounds: Optional[ShapeBounds] = None,
    graph_metas: Optional[Mapping[str, TensorMeta]] = None,
    opt_batch: int = 1,
) -> EngineProfile:
    """The profile an engine for (case, target) is built with.

    batch: [bounds.min_batch, bounds.max_batch] (the case's max_batch unless narrowed),
    opt at `opt_batch`. Height/width: the target's size for a per-size or fixed graph,
    else the bounds' side range (rounded to multiple_of), opt at the export size.
    Any dimension the ONNX graph declares static (`graph_metas`) is pinned to it.
    """
    bounds = bounds or case_bounds(case)
    b_lo, b_hi = bounds.min_batch, bounds.max_batch
    b_opt = min(max(opt_batch, b_lo), b_hi)
    if target.height is not None:
        heights = (target.height,) * 3
        widths = (target.width,) * 3
    elif bounds.fixed_height is not None:
        heights = (bounds.fixed_height,) * 3
        widths = (bounds.fixed_width,) * 3
    else:
        heights = _side_range(bounds, case.sizes.export_height)
        widths = _side_range(bounds, case.sizes.export_width)

    inputs = []
    for spec in case.inputs:
        if spec.role == "image":
            per_axis = [(b_lo, b_opt, b_hi), (spec.channels,) * 3, heights, widths]
        else:  # image_size_wh: (N, 2)
            per_axis = [(b_lo, b_opt, b_hi), (2, 2, 2)]
        graph = (graph_metas or {}).get(spec.name)
        if graph is not None and len(graph.shape) == len(per_axis):
            per_axis = [
                (dim,) * 3 if isinstance(dim, int) and not isinstance(dim, bool) else axis
                for dim, axis in zip(graph.shape, per_axis)
            ]
        lo, opt, hi = zip(*per_axis)
        inputs.append((spec.name, ShapeRange(lo, opt, hi)))
    return EngineProfile(tuple(inputs))


# --------------------------------------------------------------------------- backward

# TensorRT DataType names (trt.DataType.X.name) -> numpy dtype names. Types numpy cannot
# hold (BF16, FP8, INT4, FP4) have no entry: an engine binding one is refused.
TRT_TO_NUMPY = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT32": "int32",
    "INT64": "int64",
    "INT8": "int8",
    "UINT8": "uint8",
    "BOOL": "bool",
}


def numpy_dtype_for_trt(trt_dtype_name: str, input_name: str = "") -> str:
    name = trt_dtype_name.rsplit(".", 1)[-1].upper()
    if name not in TRT_TO_NUMPY:
        where = f"input '{input_name}': " if input_name else ""
        raise HarnessError(
            f"{where}TensorRT binding type {name} has no numpy equivalent; the harness feeds numpy arrays "
            f"(supported: {', '.join(sorted(TRT_TO_NUMPY))})"
        )
    return TRT_TO_NUMPY[name]


def engine_tensor_meta(
    name: str,
    dtype: str,
    shape: Sequence[int],
    profile_min: Optional[Sequence[int]] = None,
    profile_max: Optional[Sequence[int]] = None,
    case_meta: Optional[TensorMeta] = None,
    source: str = "engine profile",
) -> TensorMeta:
    """An engine input as the harness's contract.

    `shape` is the engine's declared shape (-1 for dynamic dims); `profile_min/max`
    the active profile's range for it. A dynamic dim becomes a DimRange with the
    profile's bounds; its label and multiple_of come from the case's own meta for the
    same axis (a profile cannot express "multiples of 32"). min == max gives an int.
    """
    dims = []
    for axis, dim in enumerate(shape):
        dim = int(dim)
        if dim >= 0:
            dims.append(dim)
            continue
        if profile_min is None or profile_max is None:
            raise HarnessError(f"input '{name}': dimension {axis} is dynamic but no profile range was given")
        lo, hi = int(profile_min[axis]), int(profile_max[axis])
        if lo == hi:
            dims.append(lo)
            continue
        label, multiple = f"dim {axis}", 1
        own = case_meta.shape[axis] if case_meta is not None and axis < len(case_meta.shape) else None
        if isinstance(own, DimRange):
            label, multiple = own.label or label, own.multiple_of
        dims.append(DimRange(lo, hi, multiple, f"{label} ({source})"))
    return TensorMeta(name, (dtype,), tuple(dims))


def metas_from_profile(
    profile: EngineProfile, dtypes: Mapping[str, str], case_metas: Optional[Mapping[str, TensorMeta]] = None
) -> dict:
    """The contract an engine built with `profile` publishes (every profiled dim dynamic)."""
    metas = {}
    for name, shape_range in profile.inputs:
        shape = tuple(lo if lo == hi else -1 for lo, hi in zip(shape_range.min, shape_range.max))
        metas[name] = engine_tensor_meta(
            name, dtypes[name], shape, shape_range.min, shape_range.max, (case_metas or {}).get(name)
        )
    return metas


def _as_dim(dim, fallback: DimRange):
    if isinstance(dim, int) and not isinstance(dim, bool):
        return dim
    if isinstance(dim, DimRange):
        return dim
    return fallback  # symbolic / unknown: bounded by the case


def bounds_from_engine_metas(case: ModelCase, metas: Mapping[str, TensorMeta], source: str = "engine profile") -> ShapeBounds:
    """ShapeBounds an engine can take: the case's bounds narrowed to the engine's shapes.

    Batch is the intersection over every input's first dim (TensorRT needs them equal).
    """
    base = case_bounds(case)
    image = next(spec for spec in case.inputs if spec.role == "image")
    meta = metas.get(image.name)
    if meta is None or len(meta.shape) != 4:
        raise HarnessError(f"{source}: no 4-D input '{image.name}' to read image sizes from")
    side = DimRange(base.min_side, base.max_side, base.multiple_of, "side")
    batch_lo, batch_hi = base.min_batch, base.max_batch
    for spec in case.inputs:
        other = metas.get(spec.name)
        if other is None or not other.shape:
            continue
        first = _as_dim(other.shape[0], DimRange(base.min_batch, base.max_batch))
        lo, hi = (first, first) if isinstance(first, int) else (first.min, first.max)
        batch_lo, batch_hi = max(batch_lo, lo), min(batch_hi, hi)
    if batch_lo > batch_hi:
        raise HarnessError(
            f"{source}: no batch size in both the case's [{base.min_batch}, {base.max_batch}] and the engine's range"
        )
    batch = batch_lo if batch_lo == batch_hi else DimRange(batch_lo, batch_hi)
    height, width = _as_dim(meta.shape[2], side), _as_dim(meta.shape[3], side)
    bounds = bounds_from_dims(case, height, width, batch, source)
    if bounds.min_side > bounds.max_side:
        raise HarnessError(f"{source}: image sides {height} x {width} do not meet the case's {case.sizes.describe()}")
    return bounds


def describe_profiles(profiles: Iterable[EngineProfile]) -> list:
    return [profile.as_record() for profile in profiles]
