"""Keypoints: per-keypoint pixel error and per-instance OKS over matched instances.

Instances are paired through the box matching (order carries no meaning) or, for
outputs with a fixed instance layout, index by index. A keypoint decoded from a heatmap
whose two best peaks are (nearly) equal in the reference is a tie: argmax may pick
either peak, so a jump there is ambiguous, not a failure.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .boxes import Matching, box_area, instance_shape_failure, nonfinite_failure, score_limit
from .instances import Instances
from .tolerances import ResolvedTolerance
from .verdict import Comparison, Verdict, beyond, side_name

# COCO's 17 person keypoints, in COCO's order (the order COCO-trained heads emit, and
# the one the zoo's scene skeleton follows).
COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)

# Per-keypoint falloff of the COCO object keypoint similarity, in COCO_KEYPOINT_NAMES order.
COCO_SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]
) / 10.0

# For keypoint sets other than COCO's 17 when no sigmas are given: the mean COCO sigma,
# so OKS keeps its usual scale.
DEFAULT_SIGMA = float(COCO_SIGMAS.mean())

EVIDENCE_LIMIT = 10


def _px(value: float) -> str:
    """A pixel distance with the digits it needs: 12.3, 1.0, 0.0104 (never 0.0 for 0.011)."""
    return f"{value:.1f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def _names(k: int) -> Sequence[str]:
    return COCO_KEYPOINT_NAMES if k == len(COCO_KEYPOINT_NAMES) else tuple(f"kp{j}" for j in range(k))


def _sigmas_for(k: int, sigmas) -> np.ndarray:
    if sigmas is None:
        return COCO_SIGMAS if k == len(COCO_SIGMAS) else np.full(k, DEFAULT_SIGMA)
    sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if len(sigmas) != k:
        raise ValueError(f"{len(sigmas)} OKS sigmas given for {k} keypoints")
    return sigmas


def object_keypoint_similarity(distance, area, sigmas, visible) -> np.ndarray:
    """COCO OKS per instance. distance (P, K) px, area (P,) px^2, visible (P, K) bool.

    Instances with no visible keypoint get NaN (nothing to measure).
    """
    kappa_sq = (2.0 * np.asarray(sigmas)) ** 2
    # np.spacing keeps a zero-area box from dividing by zero, as COCO's eps does.
    exponent = distance**2 / (2.0 * kappa_sq[None, :] * (np.asarray(area)[:, None] + np.spacing(1)))
    similarity = np.exp(-exponent) * visible
    n_visible = visible.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_visible > 0, similarity.sum(axis=1) / n_visible, np.nan)


def compare_keypoints(
    ref: Instances,
    cand: Instances,
    matching: Optional[Matching],
    tol: ResolvedTolerance,
    *,
    sigmas=COCO_SIGMAS,
    output: str = "keypoints",
    index_wise: bool = False,
    visibility_threshold: Optional[float] = None,
    score_threshold: Optional[float] = None,
    deltas=None,
    unstable: Optional[dict] = None,
) -> Comparison:
    """Judge keypoints of paired instances: pixel error, OKS, keypoint score, ties.

    matching: the box matching (from compare_boxes); unused when index_wise.
    sigmas: OKS falloff per keypoint; None means COCO's for 17 keypoints, else DEFAULT_SIGMA.
    visibility_threshold: reference keypoints scoring below it are not judged on
    position (their score still is); None judges every keypoint.
    score_threshold: the instance score threshold; failures of instances above it are
    named first (a reader should meet a real person before a background prior).
    OKS is not judged for zero-area instances: its scale is the area, and 0 makes any
    distance, even 1e-5 px, infinitely bad. Their keypoints are judged in pixels.
    Pairs the box judgement excused (a tie at a cut or in NMS) are not judged here.
    deltas: a shift.PointDeltas collecting the signed errors of the judged keypoints.
    unstable: NoiseFloor.unstable of this image (knife edges with their own limits).
    """

    def result(verdict, metrics, message, evidence=None):
        return Comparison.judged("keypoints", output, tol, verdict, metrics, message, evidence)

    if ref.keypoints is None or cand.keypoints is None:
        has = "reference" if ref.keypoints is not None else "candidate"
        return result(Verdict.FAIL, {}, f"only the {side_name(has)} has keypoints")

    ref_kp = np.asarray(ref.keypoints, dtype=np.float64)
    cand_kp = np.asarray(cand.keypoints, dtype=np.float64)
    k = ref_kp.shape[1] if ref_kp.ndim == 3 else 0
    names = _names(k)

    def nonfinite_keypoint(where, value):
        i, j, coord = where
        return f"instance {i} keypoint {j} ({names[j] if j < len(names) else j}) {'xys'[coord]} is {value}"

    unjudgeable = (nonfinite_failure(ref_kp, cand_kp, nonfinite_keypoint)
                   or instance_shape_failure("keypoint layout", ref_kp, cand_kp, " per instance"))
    if unjudgeable is not None:
        return result(Verdict.FAIL, {}, *unjudgeable)

    if index_wise:
        if len(ref) != len(cand):
            return result(
                Verdict.FAIL,
                {"n_ref": len(ref), "n_cand": len(cand)},
                f"fixed-layout output: the {side_name('reference')} has {len(ref)} instances, the "
                f"{side_name('candidate')} {len(cand)}",
            )
        ref_idx = cand_idx = np.arange(len(ref), dtype=np.intp)
    else:
        if matching is None:
            raise ValueError("compare_keypoints needs the box matching unless index_wise=True")
        ref_idx, cand_idx = matching.judged_pairs()

    if len(ref_idx) == 0 or k == 0:
        return result(
            Verdict.VACUOUS,
            {"n_pairs": 0},
            f"no matched instance carries {side_name('reference')} keypoints; nothing to compare",
        )

    sigmas = _sigmas_for(k, sigmas)
    r, c = ref_kp[ref_idx], cand_kp[cand_idx]
    delta = np.abs(c[..., :2] - r[..., :2])  # (P, K, 2)
    distance = np.hypot(delta[..., 0], delta[..., 1])
    score_abs = np.abs(c[..., 2] - r[..., 2])
    allowed_score = score_limit(tol, r[..., 2])
    if visibility_threshold is None:
        visible = np.ones(distance.shape, dtype=bool)
    else:
        visible = r[..., 2] >= visibility_threshold
    boxes = ref.boxes[ref_idx]
    area = box_area(boxes)
    oks_judged = area > 0
    oks = np.where(oks_judged, object_keypoint_similarity(distance, area, sigmas, visible), np.nan)

    if ref.keypoint_peak_gap is not None:
        gap = np.asarray(ref.keypoint_peak_gap, dtype=np.float64)[ref_idx]
        tie = gap < float(tol["peak_gap"])
    else:
        gap = np.full(distance.shape, np.inf)
        tie = np.zeros(distance.shape, dtype=bool)

    # The candidate's own peak gaps are compared too (they are an output of the model, read
    # from both sides): like keypoint scores, differences of heatmap logits.
    if ref.keypoint_peak_gap is not None and cand.keypoint_peak_gap is not None:
        cand_gap = np.asarray(cand.keypoint_peak_gap, dtype=np.float64)[cand_idx]
        gap_abs = np.abs(cand_gap - gap)
        # A non-finite candidate gap where the reference's is finite never passes.
        gap_bad = np.isfinite(gap) & ~(gap_abs <= score_limit(tol, gap))
    else:
        gap_abs = np.zeros(distance.shape)
        gap_bad = np.zeros(distance.shape, dtype=bool)
    if deltas is not None:
        deltas.add_keypoints(ref, cand, ref_idx, cand_idx, tol, judged=visible & ~tie)
    pixel_limit = float(tol["pixel"])
    min_oks = float(tol["min_oks"])
    too_far = visible & (distance > pixel_limit)
    # A numerically unstable reference instance (deploy_parity/compare/noise.py) sets its
    # own limits: a keypoint beyond the example's limit but within its own is a knife edge.
    own = [(unstable or {}).get(int(i), {}).get("limits", {}) for i in ref_idx]
    own_pixel = np.array([o.get(("keypoints", "pixel"), 0.0) for o in own], dtype=np.float64).reshape(-1, 1)
    own_score = np.array([o.get(("keypoints", "score_abs"), 0.0) for o in own], dtype=np.float64).reshape(-1, 1)
    edge = too_far & ~tie & (distance <= np.maximum(pixel_limit, own_pixel))
    score_bad = score_abs > allowed_score
    edge |= score_bad & (score_abs <= np.maximum(allowed_score, own_score))
    score_bad &= ~edge
    # OKS again with the tied keypoints' jumps forgiven: if that passes, only ties broke it.
    oks_without_ties = np.where(
        oks_judged, object_keypoint_similarity(np.where(tie | edge, 0.0, distance), area, sigmas, visible), np.nan)
    oks_low = oks_judged & (np.nan_to_num(oks, nan=1.0) < min_oks)
    oks_low_not_ties = oks_judged & (np.nan_to_num(oks_without_ties, nan=1.0) < min_oks)
    hard_far = too_far & ~tie & ~edge
    tie_breaks = too_far & tie

    shown = np.where(visible, distance, -np.inf)
    worst_flat = int(np.argmax(shown))
    worst_p, worst_j = np.unravel_index(worst_flat, distance.shape)
    metrics = {
        "n_pairs": int(len(ref_idx)),
        "max_px": float(distance[visible].max()) if visible.any() else 0.0,
        "mean_px": float(distance[visible].mean()) if visible.any() else 0.0,
        "min_oks": float(np.nanmin(oks)) if np.isfinite(oks).any() else float("nan"),
        "max_score_abs": float(score_abs.max()),
        "worst_instance": int(ref_idx[worst_p]),
        "worst_keypoint": int(worst_j),
        "n_ties": int(tie.sum()),
        "n_oks_not_judged": int((~oks_judged).sum()),
        "n_ambiguous": int(tie_breaks.sum()),
    }

    def keypoint_name(p, j):
        return f"instance {int(ref_idx[p])} keypoint {j} ({names[j]})"

    def keypoint_text(p, j, limit=""):
        i_ref, i_cand = int(ref_idx[p]), int(cand_idx[p])
        dx, dy = delta[p, j]
        mostly = "x" if dx >= dy else "y"
        other = "" if i_ref == i_cand else f" ({side_name('candidate')} instance {i_cand})"
        return (
            f"{keypoint_name(p, j)}: {_px(distance[p, j])} px "
            f"(x {_px(dx)}, y {_px(dy)}){limit}, mostly in {mostly}{other}"
        )

    def keypoint_record(p, j):
        return {
            "ref_index": int(ref_idx[p]),
            "cand_index": int(cand_idx[p]),
            "keypoint": int(j),
            "name": names[j],
            "error_px": float(distance[p, j]),
            "dx": float(delta[p, j, 0]),
            "dy": float(delta[p, j, 1]),
            "peak_gap": float(gap[p, j]),
            "oks": float(oks[p]),
        }

    def records(mask):
        return [keypoint_record(p, j) for p, j in zip(*np.nonzero(mask))][:EVIDENCE_LIMIT]

    confident = (np.ones(len(ref_idx), dtype=bool) if score_threshold is None
                 else ref.scores[ref_idx] >= score_threshold)

    def worst_of(mask, weight):
        # Among confident instances first, when any of them is in `mask`.
        preferred = mask & confident[:, None]
        mask = preferred if preferred.any() else mask
        flat = int(np.argmax(np.where(mask, weight, -np.inf)))
        return np.unravel_index(flat, mask.shape)

    failures = []
    if hard_far.any():
        p, j = worst_of(hard_far, distance)
        oks_text = f"OKS {oks[p]:.4f}" if oks_judged[p] else "OKS not judged (zero-area box)"
        limit = beyond(distance[p, j], pixel_limit, " px").split(" > ")[1]
        failures.append(f"{keypoint_text(p, j, f' > {limit}')}{tol.explain('pixel', ' px')}; {oks_text}")
    def score_difference(difference, limit):
        # Scores and peak gaps are both judged against the row's score limits.
        return f"difference {beyond(difference, limit)}{tol.explain('score_abs')}"

    if score_bad.any():
        p, j = worst_of(score_bad, score_abs)
        failures.append(f"{keypoint_name(p, j)}: score {r[p, j, 2]:.4f} became {c[p, j, 2]:.4f}, "
                        f"{score_difference(score_abs[p, j], allowed_score[p, j])}")
    if gap_bad.any():
        p, j = worst_of(gap_bad, gap_abs)
        failures.append(
            f"{keypoint_name(p, j)}: its best heatmap peak beats the second by "
            f"{gap[p, j]:.4g} in the {side_name('reference')}, {cand_gap[p, j]:.4g} in the {side_name('candidate')}: "
            f"{score_difference(gap_abs[p, j], score_limit(tol, gap[p, j]))}"
        )
    # An OKS drop caused by a keypoint already reported would only repeat it.
    oks_news = oks_low_not_ties & ~hard_far.any(axis=1)
    if oks_news.any():
        preferred = oks_news & confident
        pool = preferred if preferred.any() else oks_news
        p = int(np.nanargmin(np.where(pool, oks_without_ties, np.nan)))
        j = int(np.argmax(np.where(visible[p], distance[p], -np.inf)))
        failures.append(
            f"instance {int(ref_idx[p])}: OKS {oks[p]:.4f} < {min_oks:g}; its worst is {keypoint_text(p, j)}"
        )

    if failures:
        evidence = {"keypoints": records(hard_far | score_bad), "ties": records(tie_breaks)}
        counts = (
            f"In all: {int(hard_far.sum())} keypoint(s) beyond {pixel_limit:g} px, "
            f"{int(score_bad.sum())} score(s) off, {int(gap_bad.sum())} peak gap(s) off, "
            f"{int(oks_low_not_ties.sum())} instance(s) "
            f"with low OKS, {int(tie_breaks.sum())} tie(s)"
        )
        return result(Verdict.FAIL, metrics, "; ".join(failures) + ". " + counts, evidence)

    if edge.any():
        p, j = worst_of(edge, distance)
        return result(
            Verdict.AMBIGUOUS,
            metrics,
            f"{keypoint_text(p, j)}, but the {side_name('reference')} instance is a rounding knife edge: its own "
            f"float32 and shadow runs move it far more than the rest of the example "
            f"({'; '.join(unstable[int(ref_idx[p])]['why'])}), and the keypoint is within what that explains. "
            f"{int(edge.sum())} such keypoint(s)",
            {"knife_edges": records(edge)},
        )

    if tie_breaks.any() or oks_low.any():
        p, j = worst_of(tie_breaks, distance) if tie_breaks.any() else worst_of(tie & visible, distance)
        return result(
            Verdict.AMBIGUOUS,
            metrics,
            f"{keypoint_text(p, j)}, but the {side_name('reference')}'s two best heatmap peaks for it differ "
            f"by only {gap[p, j]:.3g} (< peak_gap {float(tol['peak_gap']):g}): a tie either "
            f"peak may win. {int(tie_breaks.sum())} such keypoint(s)",
            {"ties": records(tie_breaks | (tie & oks_low[:, None]))},
        )

    return result(
        Verdict.PASS,
        metrics,
        f"{len(ref_idx)} instance(s) x {k} keypoints: max error {metrics['max_px']:.3g} px, "
        f"min OKS {metrics['min_oks']:.4f}, max score difference {metrics['max_score_abs']:.3g}",
    )
