"""Masks: IoU, boundary agreement and soft error of matched instances' masks.

Works on per-ROI masks (R, M, M) and on masks pasted into the image (R, H, W) alike.
Rounding flips soft values near the threshold, and those pixels lie on the boundary;
so besides IoU the boundary is judged on its own, and interior flips show up in IoU.
A pixel whose reference soft value lies within soft_abs of the threshold sits on the
decision boundary itself: it is counted and reported, never judged (a 0.6-px-wide box
whose soft values are exactly 0.5 must not fail on 0.499999). Binary masks have no
soft values, so none of their pixels is excused.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .boxes import Matching, first_nonfinite, instance_shape_failure, nonfinite_failure
from .instances import Instances
from .tolerances import ResolvedTolerance
from .verdict import Comparison, Verdict, beyond, side_name

EVIDENCE_LIMIT = 10


def mask_boundary(masks: np.ndarray) -> np.ndarray:
    """Pixels of each boolean mask (..., H, W) with a 4-neighbour outside the mask.

    Outside the image counts as outside the mask, so mask pixels on the image edge are
    boundary.
    """
    interior = masks.copy()
    interior[..., 1:, :] &= masks[..., :-1, :]
    interior[..., :-1, :] &= masks[..., 1:, :]
    interior[..., :, 1:] &= masks[..., :, :-1]
    interior[..., :, :-1] &= masks[..., :, 1:]
    interior[..., 0, :] = False
    interior[..., -1, :] = False
    interior[..., :, 0] = False
    interior[..., :, -1] = False
    return masks & ~interior


def boundary_counts(ref_on: np.ndarray, cand_on: np.ndarray) -> tuple[int, int]:
    """(pixels in the union of both boundaries, how many of them the masks disagree on)."""
    boundary = mask_boundary(ref_on) | mask_boundary(cand_on)
    return int(np.count_nonzero(boundary)), int(np.count_nonzero(boundary & (ref_on ^ cand_on)))


def _as_float(masks: np.ndarray) -> np.ndarray:
    return masks if np.issubdtype(masks.dtype, np.floating) else masks.astype(np.float32)


def _pair_statistics(ref_masks, cand_masks, ref_idx, cand_idx, threshold, margin) -> dict:
    """Per pair: pixel counts over the judged pixels (intersection, each side, boundary
    flips), the whole boundary, the pixels at the threshold (excused) and how many of
    them flipped, and the largest soft difference.

    One pair at a time into reused buffers: a 640x640 mask's temporaries stay in cache
    and nothing of the size of the whole stack is ever allocated. The boundary, the
    costliest part, is only traced for pairs whose thresholded masks differ at all;
    elsewhere no boundary pixel can flip.
    """
    n_pairs = len(ref_idx)
    counts = ("intersection", "ref_px", "cand_px", "boundary_flips", "threshold_px", "threshold_flips")
    stats = {name: np.zeros(n_pairs, dtype=np.int64) for name in counts}
    stats["boundary_px"] = np.full(n_pairs, -1, dtype=np.int64)  # -1: not traced (no flip possible)
    stats["soft_abs"] = np.zeros(n_pairs, dtype=np.float64)
    if n_pairs == 0:
        return stats
    shape = ref_masks.shape[1:]
    soft = np.issubdtype(ref_masks.dtype, np.floating)
    ref_on, cand_on, both, judged, flips = (np.empty(shape, dtype=bool) for _ in range(5))
    soft_dtype = np.result_type(ref_masks.dtype, cand_masks.dtype, np.float32)
    difference = np.empty(shape, dtype=soft_dtype)
    for p, (r, c) in enumerate(zip(ref_idx.tolist(), cand_idx.tolist())):
        ref_soft, cand_soft = ref_masks[r], cand_masks[c]
        np.greater_equal(ref_soft, threshold, out=ref_on)
        np.greater_equal(cand_soft, threshold, out=cand_on)
        np.logical_xor(ref_on, cand_on, out=flips)
        if soft:
            np.subtract(ref_soft, threshold, out=difference, dtype=soft_dtype)
            np.abs(difference, out=difference)
            np.greater(difference, margin, out=judged)
        else:
            judged.fill(True)
        at_threshold = ~judged
        stats["threshold_px"][p] = np.count_nonzero(at_threshold)
        stats["threshold_flips"][p] = np.count_nonzero(flips & at_threshold)
        np.logical_and(ref_on, cand_on, out=both)
        intersection = np.count_nonzero(both & judged)
        ref_px, cand_px = np.count_nonzero(ref_on & judged), np.count_nonzero(cand_on & judged)
        stats["intersection"][p], stats["ref_px"][p], stats["cand_px"][p] = intersection, ref_px, cand_px
        if ref_px + cand_px > 2 * intersection:  # some judged pixel differs
            boundary = mask_boundary(ref_on) | mask_boundary(cand_on)
            stats["boundary_px"][p] = int(np.count_nonzero(boundary & judged))
            stats["boundary_flips"][p] = int(np.count_nonzero(boundary & flips & judged))
        np.subtract(ref_soft, cand_soft, out=difference, dtype=soft_dtype)
        np.abs(difference, out=difference)
        stats["soft_abs"][p] = float(difference.max())
    return stats


def _nonfinite(masks: np.ndarray):
    if not np.issubdtype(masks.dtype, np.floating) or masks.size == 0:
        return None
    # One sum is far cheaper than isfinite() of every pixel, and NaN or +-inf anywhere
    # makes it non-finite. Only then locate the culprit (an overflowing sum of finite
    # values finds none and passes).
    if np.isfinite(masks.sum(dtype=np.float64 if masks.dtype == np.float64 else np.float32)):
        return None
    return first_nonfinite(masks)


def compare_masks(
    ref: Instances,
    cand: Instances,
    matching: Matching,
    tol: ResolvedTolerance,
    *,
    threshold: float = 0.5,
    output: str = "masks",
    unstable: Optional[dict] = None,
) -> Comparison:
    """Judge the masks of matched instances: IoU after thresholding at `threshold`,
    fraction of boundary pixels that flip, largest soft difference."""

    def result(verdict, metrics, message, evidence=None):
        return Comparison.judged("masks", output, tol, verdict, metrics, message, evidence)

    if ref.masks is None or cand.masks is None:
        has = "reference" if ref.masks is not None else "candidate"
        return result(Verdict.FAIL, {}, f"only the {side_name(has)} has masks")
    ref_masks, cand_masks = np.asarray(ref.masks), np.asarray(cand.masks)

    def nonfinite_mask(where, value):
        i, y, x = where
        return f"mask of instance {i} is {value} at pixel (y {y}, x {x})"

    unjudgeable = (nonfinite_failure(ref_masks, cand_masks, nonfinite_mask, find=_nonfinite)
                   or instance_shape_failure("mask size", ref_masks, cand_masks))
    if unjudgeable is not None:
        return result(Verdict.FAIL, {}, *unjudgeable)

    ref_idx, cand_idx = matching.judged_pairs()
    if len(ref_idx) == 0:
        return result(Verdict.VACUOUS, {"n_pairs": 0}, "no matched instances; no masks to compare")

    soft_limit = float(tol["soft_abs"])
    stats = _pair_statistics(ref_masks, cand_masks, ref_idx, cand_idx, threshold, soft_limit)
    union = stats["ref_px"] + stats["cand_px"] - stats["intersection"]
    nonempty = union > 0
    iou = np.where(nonempty, stats["intersection"] / np.maximum(union, 1), 1.0)
    boundary_disagreement = np.where(
        stats["boundary_px"] > 0, stats["boundary_flips"] / np.maximum(stats["boundary_px"], 1), 0.0
    )

    def boundary_px(p):
        # Traced lazily for the pairs a report names, when the loop had no need to.
        if stats["boundary_px"][p] < 0:
            ref_soft = _as_float(ref_masks[ref_idx[p]])
            judged = np.abs(ref_soft - threshold) > soft_limit if np.issubdtype(ref_masks.dtype, np.floating) else True
            boundary = mask_boundary(ref_soft >= threshold) | mask_boundary(_as_float(cand_masks[cand_idx[p]]) >= threshold)
            stats["boundary_px"][p] = int(np.count_nonzero(boundary & judged))
        return int(stats["boundary_px"][p])

    soft_abs = stats["soft_abs"]

    metrics = {
        "n_pairs": int(len(ref_idx)),
        "n_empty_pairs": int((~nonempty).sum()),
        "min_iou": float(iou.min()),
        "max_boundary_disagreement": float(boundary_disagreement.max()),
        "max_soft_abs": float(soft_abs.max()),
        "n_threshold_px": int(stats["threshold_px"].sum()),
        "n_threshold_flips": int(stats["threshold_flips"].sum()),
        "worst_instance": -1,
    }
    threshold_text = (
        f"; {metrics['n_threshold_flips']} of {metrics['n_threshold_px']} pixel(s) within {soft_limit:g} of the "
        f"threshold {threshold:g} flipped (excused: the {side_name('reference')} sits on the threshold)"
        if metrics["n_threshold_px"] else ""
    )
    # A pair whose every pixel that differs sits at the threshold, and nothing else is on.
    only_at_threshold = ~nonempty & (stats["threshold_flips"] > 0)

    if not nonempty.any() and not only_at_threshold.any():
        # Nothing above the threshold on either side: a pass here would prove nothing.
        return result(
            Verdict.VACUOUS,
            metrics,
            f"all {len(ref_idx)} matched masks are empty at threshold {threshold:g} on both sides",
        )

    min_iou = float(tol["min_iou"])
    max_boundary = float(tol["max_boundary_disagreement"])
    fails = (iou < min_iou) | (boundary_disagreement > max_boundary) | (soft_abs > soft_limit)
    # A numerically unstable reference instance's soft mask (deploy_parity/compare/noise.py)
    # is judged by its own rounding: a soft error beyond the example's limit but within its
    # own, with IoU and boundary in limits, is a knife edge (AMBIGUOUS).
    own_soft = np.array([(unstable or {}).get(int(i), {}).get("limits", {}).get(("masks", "soft_abs"), 0.0)
                         for i in ref_idx], dtype=np.float64)
    edge = fails & (iou >= min_iou) & (boundary_disagreement <= max_boundary) & (soft_abs <= own_soft)
    fails &= ~edge
    # How far past its limit each metric is (>1 breaks it).
    excess = np.stack(
        [
            (1.0 - iou) / max(1.0 - min_iou, 1e-12),
            boundary_disagreement / max(max_boundary, 1e-12),
            soft_abs / max(soft_limit, 1e-12),
        ],
        axis=1,
    )
    worst = int(np.argmax(excess.max(axis=1)))
    metrics["worst_instance"] = int(ref_idx[worst])

    def pair_text(p):
        r, c = int(ref_idx[p]), int(cand_idx[p])
        other = "" if r == c else f" ({side_name('candidate')} instance {c})"
        differ = int(union[p] - stats["intersection"][p])
        return (
            f"instance {r}{other}: mask IoU {iou[p]:.4f} ({stats['ref_px'][p]} {side_name('reference')} px, "
            f"{stats['cand_px'][p]} {side_name('candidate')} px, {differ} differ), boundary disagreement "
            f"{boundary_disagreement[p]:.1%} of {boundary_px(p)} boundary px, "
            f"soft max abs {soft_abs[p]:.3g}"
        )

    def pair_record(p):
        return {
            "ref_index": int(ref_idx[p]),
            "cand_index": int(cand_idx[p]),
            "iou": float(iou[p]),
            "boundary_disagreement": float(boundary_disagreement[p]),
            "soft_abs": float(soft_abs[p]),
            "boundary_px": boundary_px(p),
            **{name: int(stats[name][p]) for name in ("ref_px", "cand_px", "boundary_flips", "threshold_px",
                                                       "threshold_flips")},
        }

    def pair_records(flagged):
        return [pair_record(p) for p in np.flatnonzero(flagged)[:EVIDENCE_LIMIT]]

    if fails.any():
        breaches = (
            "IoU below min_iou",
            "boundary disagreement above max_boundary_disagreement",
            "soft error above soft_abs",
        )
        broken = breaches[int(np.argmax(excess[worst]))]
        where = ""
        if broken.startswith("soft"):
            diff = np.abs(_as_float(ref_masks[ref_idx[worst]]) - _as_float(cand_masks[cand_idx[worst]]))
            y, x = np.unravel_index(int(np.argmax(diff)), diff.shape)
            where = (f" at pixel (y {y}, x {x}): {beyond(soft_abs[worst], soft_limit)}"
                     f"{tol.explain('soft_abs')}")
        return result(
            Verdict.FAIL,
            metrics,
            f"worst: {pair_text(worst)}: {broken}{where}. In all {int(fails.sum())} of "
            f"{len(ref_idx)} mask(s) out of tolerance{threshold_text}",
            {
                "worst": pair_record(worst),
                "pairs": pair_records(fails),
            },
        )

    def ambiguous(flagged, why):
        """AMBIGUOUS: the flagged pairs differ only where rounding may decide; why(p) says
        where, for the first of them."""
        p = int(np.flatnonzero(flagged)[0])
        return result(Verdict.AMBIGUOUS, metrics, f"{int(flagged.sum())} mask(s) differ {why(p)}",
                      {"pairs": pair_records(flagged)})

    def at_knife_edge(p):
        return (f"beyond the example's soft limit only where the {side_name('reference')} instance is a rounding "
                f"knife edge ({'; '.join(unstable[int(ref_idx[p])]['why'])}); e.g. {pair_text(p)}")

    def at_threshold(p):
        return (f"only in pixels whose {side_name('reference')} soft value lies within {soft_limit:g} of the "
                f"threshold {threshold:g}; e.g. instance {int(ref_idx[p])}: {int(stats['threshold_flips'][p])} of "
                f"{int(stats['threshold_px'][p])} such pixel(s) flipped, soft max abs {soft_abs[p]:.3g}")

    if edge.any():
        return ambiguous(edge, at_knife_edge)
    if only_at_threshold.any():
        return ambiguous(only_at_threshold, at_threshold)

    return result(
        Verdict.PASS,
        metrics,
        f"{len(ref_idx)} mask(s): min IoU {metrics['min_iou']:.4f}, max boundary "
        f"disagreement {metrics['max_boundary_disagreement']:.1%}, max soft error "
        f"{metrics['max_soft_abs']:.3g}{threshold_text}",
    )
