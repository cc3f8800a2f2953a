"""Input contracts: what an artifact accepts, and what a case may be fed. One home for
every question about input names, dtypes and shapes.

  feed.py      per-input metadata (TensorMeta, DimRange) and the check of one feed
               against it, at every inference (a wrong dtype is never cast silently)
  artifact.py  the same question asked once, up front, of a whole artifact: the dtypes
               and shapes an ONNX graph or a TensorRT engine declares against what the
               case will feed (int64 into an int32 binding: bug class 2)
  bounds.py    the sizes, batches and dtypes a (case, artifact) pair can take, which the
               strategies draw from, and the coverage gaps when an artifact accepts less
               than its case declares
"""

from deploy_parity.contracts.feed import (
    Dim,
    DimRange,
    TensorMeta,
    check_feed,
    check_values,
    dim_why_not,
    metas_for_case,
)

__all__ = ["Dim", "DimRange", "TensorMeta", "check_feed", "check_values", "dim_why_not", "metas_for_case"]
