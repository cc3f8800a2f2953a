"""The one tolerance table. Every comparison the harness makes looks its limits up here.

Keyed by (output kind, backend, precision). "*" matches any backend or precision; the
most specific row wins (exact backend beats "*", exact precision beats "*"). Each row
says why it is as loose as it is. A model case may override a row; the override, and
its reason, show up in the report next to every comparison that used it.

Kinds and their fields:
  tensor      atol, rtol: |a-b| <= atol + rtol*|ref| elementwise; max_fraction_out: the
              fraction of elements allowed outside (0 means none).
  boxes       min_iou per matched pair; corner_px: max corner error in pixels;
              score_abs: max score difference; ambiguity_margin: reference scores this
              close to the score threshold or the top-k cut may appear/disappear.
  keypoints   pixel: max per-keypoint error in pixels (visible keypoints only);
              min_oks per instance; score_abs; peak_gap: reference heatmap peaks closer
              than this are ties (ambiguous, not failures).
  masks       min_iou of thresholded masks; max_boundary_disagreement: fraction of
              boundary pixels that may flip; soft_abs: max soft-mask difference.
  (batch consistency, "a batch of N == N runs of batch 1", uses the rows of the kinds
  above for the backend under test: a batch may legitimately change rounding.)
  determinism the same fields as `tensor`, for "two runs give the same output".
  suite       max_ambiguous_fraction, max_vacuous_fraction: how many of a suite's cases
              may be ambiguous / vacuous before the suite itself fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional


@dataclass(frozen=True)
class Tolerance:
    values: Mapping[str, float]
    reason: str


@dataclass(frozen=True)
class ResolvedTolerance:
    kind: str
    backend: str
    precision: str
    values: Mapping[str, float]
    reason: str
    source: str  # "table[(kind, backend, precision)]" or "override by model <name>"

    def __getitem__(self, key: str) -> float:
        return self.values[key]

    def as_record(self) -> dict:
        return {"values": dict(self.values), "reason": self.reason, "source": self.source}


ANY = "*"

TOLERANCES: dict[tuple[str, str, str], Tolerance] = {
    # ---- fp32 on CPU: the same math, differently fused; differences are rounding only.
    ("tensor", ANY, "fp32"): Tolerance(
        {"atol": 1e-4, "rtol": 1e-4, "max_fraction_out": 0.0},
        "fp32 kernels differ only in summation order and fusion: a few ulps per op, "
        "accumulated over ~10 layers of a small model",
    ),
    ("boxes", ANY, "fp32"): Tolerance(
        {"min_iou": 0.99, "corner_px": 0.5, "score_abs": 1e-3, "ambiguity_margin": 1e-3},
        "box decoding is exp/affine on fp32 logits: sub-pixel rounding; a score within "
        "1e-3 of the threshold or the top-k cut may legitimately flip",
    ),
    ("keypoints", ANY, "fp32"): Tolerance(
        {"pixel": 0.5, "min_oks": 0.99, "score_abs": 1e-3, "peak_gap": 1e-4},
        "regressed keypoints are affine in fp32 logits: rounding only; heatmap peaks "
        "within 1e-4 of each other are ties that argmax may break either way",
    ),
    ("masks", ANY, "fp32"): Tolerance(
        {"min_iou": 0.98, "max_boundary_disagreement": 0.05, "soft_abs": 1e-3},
        "soft masks near 0.5 flip under rounding, and only on the boundary",
    ),
    ("determinism", ANY, ANY): Tolerance(
        {"atol": 0.0, "rtol": 0.0, "max_fraction_out": 0.0},
        "the same backend on the same input must give bit-identical output",
    ),
    ("suite", ANY, ANY): Tolerance(
        {"max_ambiguous_fraction": 0.2, "max_vacuous_fraction": 0.2},
        "a few boundary cases are expected; a suite mostly ambiguous or vacuous proves nothing",
    ),
}


def _candidates(kind: str, backend: str, precision: str):
    # Most specific first.
    yield (kind, backend, precision)
    yield (kind, backend, ANY)
    yield (kind, ANY, precision)
    yield (kind, ANY, ANY)


def lookup(
    kind: str,
    backend: str,
    precision: str,
    overrides: Optional[Mapping] = None,
    model: str = "",
    table: Optional[Mapping] = None,
) -> ResolvedTolerance:
    """The tolerance for one comparison.

    `overrides` is a model case's own table, keyed like TOLERANCES (or by kind alone);
    an override replaces only the fields it names and must carry a reason.
    """
    table = TOLERANCES if table is None else table
    base_key = next((k for k in _candidates(kind, backend, precision) if k in table), None)
    if base_key is None:
        raise KeyError(
            f"no tolerance for kind={kind!r} backend={backend!r} precision={precision!r}; "
            "add a row to deploy_parity/compare/tolerances.py with its reason"
        )
    base = table[base_key]
    values = dict(base.values)
    reason = base.reason
    source = f"table[{base_key}]"
    if overrides:
        keys = [k for k in _candidates(kind, backend, precision) if k in overrides]
        if kind in overrides:
            keys.append(kind)
        if keys:
            override = overrides[keys[0]]
            values.update(override.values)
            reason = f"{override.reason} (overrides: {base.reason})"
            source = f"override by model {model} of {base_key}: {sorted(override.values)}"
    return ResolvedTolerance(kind, backend, precision, values, reason, source)
