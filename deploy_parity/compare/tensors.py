"""Raw tensor comparison: for outputs with no structure, and for determinism checks."""

from __future__ import annotations

import numpy as np

from deploy_parity.compare.tolerances import ResolvedTolerance
from deploy_parity.compare.verdict import Comparison, Verdict, noise_record, side_name


def compare_tensors(ref: np.ndarray, cand: np.ndarray, tol: ResolvedTolerance, output: str, kind: str = "tensor",
                    noise=None) -> Comparison:
    """Elementwise |cand - ref| <= atol + rtol*|ref|, in order: shape, dtype kind, NaN, values.

    noise: (|reference - shadow| per element, factor, how) from the example's noise floor:
    each element's limit is then max(atol + rtol*|ref|, factor x its own noise)."""
    base = dict(kind=kind, output=output, tolerance=dict(tol.values), tolerance_source=tol.source,
                noise=noise_record(tol))
    ref = np.asarray(ref)
    cand = np.asarray(cand)
    ref_name, cand_name = side_name("reference"), side_name("candidate")
    if ref.shape != cand.shape:
        return Comparison(verdict=Verdict.FAIL, message=f"{output}: shape {cand.shape} != {ref_name} {ref.shape}",
                          **base)
    if (ref.dtype.kind in "iub") != (cand.dtype.kind in "iub"):
        return Comparison(verdict=Verdict.FAIL, message=f"{output}: dtype {cand.dtype} vs {ref_name} {ref.dtype}",
                          **base)
    if ref.size == 0:
        return Comparison(verdict=Verdict.VACUOUS, message=f"{output}: both empty, nothing compared", **base)
    a = ref.astype(np.float64)
    b = cand.astype(np.float64)
    bad_ref, bad_cand = ~np.isfinite(a), ~np.isfinite(b)
    if bad_ref.any() or bad_cand.any():
        side = cand_name if bad_cand.any() else ref_name
        values = b if bad_cand.any() else a
        where = tuple(int(i) for i in np.argwhere(bad_cand if bad_cand.any() else bad_ref)[0])
        value = values[where]
        what = "NaN" if np.isnan(value) else ("+inf" if value > 0 else "-inf")
        return Comparison(
            verdict=Verdict.FAIL,
            metrics={"nonfinite_ref": int(bad_ref.sum()), "nonfinite_cand": int(bad_cand.sum())},
            message=f"{output}: {what} in the {side} at index {where} (a non-finite value never passes)",
            **base,
        )
    abs_err = np.abs(a - b)
    rel_err = abs_err / np.maximum(np.abs(a), 1e-12)
    allowed = tol["atol"] + tol["rtol"] * np.abs(a)
    widened = ""
    if noise is not None and np.shape(noise[0]) == a.shape:
        own, factor, how = noise
        allowed = np.maximum(allowed, factor * own)
        widened = f"; or {factor:g} x the element's own rounding ({how})"
    out = abs_err > allowed
    worst = np.unravel_index(int(np.argmax(abs_err - allowed)), a.shape)
    metrics = {
        "max_abs": float(abs_err.max()),
        "mean_abs": float(abs_err.mean()),
        "max_rel": float(rel_err.max()),
        "mean_rel": float(rel_err.mean()),
        "fraction_out": float(out.mean()),
        # The smallest atol that would have passed with this rtol (Polygraphy reports the same).
        "atol_needed": float(max(0.0, (abs_err - tol["rtol"] * np.abs(a)).max())),
    }
    failed = metrics["fraction_out"] > tol["max_fraction_out"]
    message = (
        f"{output}: {out.sum()} of {out.size} elements out of tolerance; worst at {tuple(int(i) for i in worst)}: "
        f"{ref_name} {a[worst]:.6g}, {cand_name} {b[worst]:.6g} (|diff| {abs_err[worst]:.3g}, "
        f"max abs {metrics['max_abs']:.3g}, max rel {metrics['max_rel']:.3g}; limit {allowed[worst]:.3g}: atol "
        f"{tol['atol']:.3g} + rtol {tol['rtol']:.3g} x |{ref_name}|{widened}{tol.explain('atol')})"
    )
    return Comparison(verdict=Verdict.FAIL if failed else Verdict.PASS, metrics=metrics, message=message, **base)
