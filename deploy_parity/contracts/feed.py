"""Input contracts: what a backend says it accepts, and the check of a feed against it.

Every runner publishes `TensorMeta` per input (from the ONNX graph, the TensorRT engine
or the model case) and every feed is checked before any inference runs. A mismatch is
an `InputContractError` naming the input: never a silent cast (bug class 2: an int64
tensor handed to an int32 binding reads as [[w, 0]]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from deploy_parity.errors import InputContractError, UnsupportedShapeError


@dataclass(frozen=True)
class DimRange:
    """A dynamic dimension with known bounds (from a model case or an engine profile)."""

    min: int
    max: int
    multiple_of: int = 1
    label: str = ""

    def why_not(self, value: int) -> str:
        if not (self.min <= value <= self.max):
            return f"outside [{self.min}, {self.max}]"
        if value % self.multiple_of:
            return f"not a multiple of {self.multiple_of}"
        return ""

    def __str__(self):
        mult = f" step {self.multiple_of}" if self.multiple_of > 1 else ""
        return f"{self.label or 'dim'} in [{self.min}, {self.max}]{mult}"


# int: static; None / str: dynamic without known bounds; DimRange: dynamic with bounds.
Dim = Union[int, None, str, DimRange]


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtypes: tuple  # numpy dtype names this input accepts (usually exactly one)
    shape: tuple  # of Dim

    def describe_shape(self) -> str:
        parts = []
        for d in self.shape:
            parts.append("?" if d is None else str(d))
        return "(" + ", ".join(parts) + ")"


def dim_why_not(dim: Dim, value: int) -> str:
    if isinstance(dim, bool):
        raise TypeError("bool is not a dimension")
    if isinstance(dim, int):
        return "" if value == dim else f"must be {dim}"
    if isinstance(dim, DimRange):
        return dim.why_not(value)
    return ""  # None or a symbolic name: any size the backend will take


def check_feed(backend: str, metas: Mapping[str, TensorMeta], feed: Mapping[str, np.ndarray]) -> None:
    """Raise InputContractError unless `feed` matches `metas` exactly."""
    expected_names = list(metas)
    missing = [n for n in expected_names if n not in feed]
    extra = [n for n in feed if n not in metas]
    if extra:
        raise InputContractError(
            backend, extra[0], "unknown input name", f"inputs {expected_names}", f"inputs {list(feed)}"
        )
    if missing:
        raise InputContractError(
            backend, missing[0], "input missing from the feed", f"inputs {expected_names}", f"inputs {list(feed)}"
        )
    for name, meta in metas.items():
        array = feed[name]
        if not isinstance(array, np.ndarray):
            raise InputContractError(backend, name, "not a numpy array", "numpy.ndarray", type(array).__name__)
        if array.dtype.name not in meta.dtypes:
            raise InputContractError(
                backend, name, "wrong dtype", " or ".join(meta.dtypes), array.dtype.name
            )
        if array.ndim != len(meta.shape):
            raise InputContractError(
                backend, name, "wrong rank", f"rank {len(meta.shape)} {meta.describe_shape()}", f"shape {array.shape}"
            )
        if array.size == 0:
            raise InputContractError(backend, name, "empty input", f"shape {meta.describe_shape()}", f"shape {array.shape}")
        for axis, (dim, value) in enumerate(zip(meta.shape, array.shape)):
            problem = dim_why_not(dim, value)
            if problem:
                raise UnsupportedShapeError(
                    backend,
                    name,
                    f"dimension {axis} = {value} {problem}",
                    f"shape {meta.describe_shape()}",
                    f"shape {tuple(array.shape)}",
                )


def check_values(backend: str, name: str, array: np.ndarray, low: Optional[float], high: Optional[float]) -> None:
    """Value-range contract (e.g. images in [0, 1]); used where a model case states one."""
    if array.size and low is not None and array.min() < low:
        raise InputContractError(backend, name, "value below range", f">= {low}", f"min {array.min()}")
    if array.size and high is not None and array.max() > high:
        raise InputContractError(backend, name, "value above range", f"<= {high}", f"max {array.max()}")


def metas_for_case(case, target, batch_dim: Dim = None) -> dict:
    """The contract a model case itself declares for a deploy target.

    Used by the torch runners (PyTorch has no graph to read) and to bound dynamic
    dimensions that ONNX only names symbolically.
    """
    sizes = case.sizes
    batch = batch_dim if batch_dim is not None else DimRange(1, case.max_batch, 1, "batch")

    def spatial(fixed: Optional[int], label: str) -> Dim:
        if fixed is not None:
            return fixed
        return DimRange(sizes.min_side, sizes.max_side, sizes.multiple_of, label)

    metas = {}
    for spec, dtype in zip(case.inputs, target.dtypes):
        if spec.role == "image":
            shape = (batch, spec.channels, spatial(target.height, "height"), spatial(target.width, "width"))
        else:  # image_size_wh
            shape = (batch, 2)
        metas[spec.name] = TensorMeta(spec.name, (dtype,), shape)
    return metas
