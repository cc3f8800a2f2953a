"""What the localiser reads and how it says two tensors differ.

Recorded tensors are copies taken when the hook fires: a module's output kept as a view
would be rewritten by an in-place activation after it (torchvision's ReLU(inplace=True)
turned a recorded conv output into the ReLU's, and the conv was blamed for it).

Two tensors of different shapes are never given an error number: the text says both
shapes. An error is judged against the model's own rounding where it is known (the
float32 module against its float64 run, `own`), else against the table's fixed row;
both live in the tolerance table's ("layer", *, *) row.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Optional

import numpy as np


def leaves(value, _path: tuple = ()) -> list:
    """The tensors in a module's inputs or output, in order: tensors, lists, tuples and
    dicts of them, and plain objects holding them (torchvision's ImageList, the
    transform's output: the resized, padded batch). An object is not entered again
    inside itself (a cycle), and plain objects only two levels deep: what a module
    returns, not everything reachable from it."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        items = value
    elif isinstance(value, dict):
        items = value.values()
    elif (hasattr(value, "__dict__") and sum(not isinstance(v, (list, tuple, dict)) for v in _path) < 2
          and not isinstance(value, (torch.nn.Module, type, types.ModuleType, types.FunctionType,
                                     types.MethodType))):
        items = vars(value).values()
    else:
        return []
    if any(value is outer for outer in _path):
        return []
    return [t for v in list(items) for t in leaves(v, _path + (value,))]


def snapshot(tensor, keep_float64: bool = False) -> np.ndarray:
    """A copy of `tensor` as numpy, taken now (never a view an in-place op may rewrite)."""
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and not (keep_float64 and tensor.dtype.is_floating_point
                                           and tensor.dtype.itemsize == 8):
        tensor = tensor.float()
    return np.array(tensor.numpy(), copy=True)


def shape_text(shape) -> str:
    return "x".join(str(int(s)) for s in shape) if len(shape) else "scalar"


@dataclass(frozen=True)
class Gap:
    """How one tensor differs from its counterpart."""

    shapes: Optional[tuple] = None  # (ours, theirs) when the shapes differ
    error: float = 0.0  # max |a - b| (0 when both are equal); None-free: shapes carry a mismatch
    limit: float = 0.0
    how: str = ""  # what the limit is
    nan: str = ""  # "NaN in the graph only" and the like

    @property
    def agrees(self) -> bool:
        return self.shapes is None and not self.nan and self.error <= self.limit

    def text(self, ours: str = "graph", theirs: str = "reference") -> str:
        if self.shapes is not None:
            return f"shapes differ: {shape_text(self.shapes[0])} in the {ours}, {shape_text(self.shapes[1])} in the {theirs}"
        if self.nan:
            return self.nan
        return f"max abs error {self.error:.3g} (limit {self.limit:.3g}: {self.how})"


def gap(ours, theirs, row, own=None, exact: bool = False, sides=("graph", "reference")) -> Gap:
    """`ours` against `theirs`. `own`: `theirs` computed in float64 (the model's rounding is
    |theirs - own|); `exact`: the two were computed by the same kernels and must be equal
    bit for bit (two graphs on one runtime, a node neither graph changed)."""
    a = np.asarray(ours)
    b = np.asarray(theirs)
    if a.shape != b.shape:
        return Gap(shapes=(a.shape, b.shape))
    if a.size == 0:
        return Gap()
    if not (np.issubdtype(a.dtype, np.floating) and np.issubdtype(b.dtype, np.floating)):
        if a.dtype.kind == "b" or b.dtype.kind == "b":
            wrong = int((a.astype(bool) != b.astype(bool)).sum())
        else:
            wrong = int((a.astype(np.int64) != b.astype(np.int64)).sum())
        return Gap(error=float(wrong), limit=0.0, how=f"{wrong} of {a.size} integer values differ; integers are exact")
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    nan_a, nan_b = ~np.isfinite(a64), ~np.isfinite(b64)
    if (nan_a != nan_b).any():
        where = sides[0] if (nan_a & ~nan_b).any() else sides[1]
        return Gap(nan=f"NaN or Inf in the {where} only ({int((nan_a != nan_b).sum())} of {a.size} values)")
    both = nan_a & nan_b
    if both.any() and not np.array_equal(a64[both], b64[both], equal_nan=True):
        return Gap(nan=f"non-finite values differ ({int(both.sum())} of {a.size} values)")
    finite = ~both
    diff = np.abs(a64[finite] - b64[finite])
    error = float(diff.max()) if diff.size else 0.0
    if exact:
        return Gap(error=error, limit=0.0, how="the same kernels on the same input: bit-identical")
    if own is not None and np.shape(own) == b.shape:
        own = np.asarray(own, dtype=np.float64)
        rounding = float(np.nanmax(np.abs(b64 - own))) if b.size else 0.0
        scale = float(np.nanmax(np.abs(own))) if own.size else 0.0
        limit = row["factor"] * rounding + row["rel_floor"] * scale
        return Gap(error=error, limit=limit,
                   how=f"{row['factor']:g} x its own float32 rounding {rounding:.2g} + {row['rel_floor']:g} x its "
                       f"largest value {scale:.3g}")
    bound = row["atol"] + row["rtol"] * np.abs(b64[finite])
    worst = int(np.argmax(diff - bound))
    how = f"atol {row['atol']:g} + rtol {row['rtol']:g} (no float64 run of the model to measure its rounding)"
    if diff[worst] > bound[worst]:  # judged elementwise: the element furthest past its own bound
        return Gap(error=float(diff[worst]), limit=float(bound[worst]), how=how)
    return Gap(error=error, limit=error, how=how)
