"""Boxes: pair instances one-to-one by overlap, then judge each pair and each leftover.

Instance order carries no meaning, so boxes are matched by IoU, never by position. An
instance present on one side only is a failure unless its score sits on a decision
boundary (the score threshold, or the top-k cut of a side that had to cut), where a
rounding difference may legitimately keep it on one side and drop it on the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from .instances import Instances
from .tolerances import ResolvedTolerance
from .verdict import Comparison, Verdict

# Pairs overlapping less than this are not the same object. Deliberately far below any
# tolerance's min_iou: a badly shifted box should be reported as "IoU 0.6 < 0.99", not
# as one dropped box plus one hallucinated box.
MATCH_MIN_IOU = 0.1

# How many individual problems a Comparison's evidence lists (the count is always exact).
EVIDENCE_LIMIT = 10


@dataclass
class Matching:
    """One-to-one pairing of reference and candidate instances.

    pairs: (ref_idx, cand_idx), sorted by reference index.
    iou: (R, C) IoU of every reference box with every candidate box.
    """

    pairs: list
    iou: np.ndarray
    unmatched_ref: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    unmatched_cand: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))

    @property
    def ref_index(self) -> np.ndarray:
        return np.array([r for r, _ in self.pairs], dtype=np.intp)

    @property
    def cand_index(self) -> np.ndarray:
        return np.array([c for _, c in self.pairs], dtype=np.intp)


def box_iou(a, b) -> np.ndarray:
    """IoU of every box in `a` (R, 4) with every box in `b` (C, 4), xyxy. NaN propagates."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    overlap = np.clip(bottom_right - top_left, 0, None)
    inter = overlap[..., 0] * overlap[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    empty_union = union == 0
    if empty_union.any():
        # Zero-area boxes: the same degenerate box is the same box (1); otherwise 0, not 0/0.
        same = np.all(a[:, None, :] == b[None, :, :], axis=-1)
        iou[empty_union] = np.where(same[empty_union], 1.0, 0.0)
    return iou


def match_instances(ref: Instances, cand: Instances, min_iou: float = MATCH_MIN_IOU) -> Matching:
    """Optimal one-to-one assignment maximising IoU; label agreement comes first.

    Pairs overlapping less than `min_iou` are never formed. Non-finite boxes overlap nothing.
    """
    iou = box_iou(ref.boxes, cand.boxes)
    usable = np.nan_to_num(iou, nan=0.0, posinf=0.0, neginf=0.0)
    eligible = usable >= min_iou
    weight = np.where(eligible, usable, 0.0)
    if ref.labels is not None and cand.labels is not None and weight.size:
        same_label = np.asarray(ref.labels)[:, None] == np.asarray(cand.labels)[None, :]
        # A bonus larger than the largest possible IoU sum (min(R, C)): the assignment
        # maximises the number of label-consistent pairs first, overlap second, so a
        # label mismatch is never preferred over a label match.
        weight = weight + np.where(eligible & same_label, min(weight.shape) + 1.0, 0.0)
    if weight.size:
        rows, cols = linear_sum_assignment(weight, maximize=True)
        keep = eligible[rows, cols]
        rows, cols = rows[keep], cols[keep]
    else:
        rows = cols = np.zeros(0, dtype=np.intp)
    order = np.argsort(rows, kind="stable")
    rows, cols = rows[order], cols[order]
    return Matching(
        pairs=list(zip(rows.tolist(), cols.tolist())),
        iou=iou,
        unmatched_ref=np.setdiff1d(np.arange(len(ref)), rows).astype(np.intp),
        unmatched_cand=np.setdiff1d(np.arange(len(cand)), cols).astype(np.intp),
    )


def first_nonfinite(array) -> Optional[tuple]:
    """Index of the first NaN/inf element of `array`, or None when all are finite."""
    if array is None:
        return None
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        return None
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size == 0:
        return None
    return tuple(int(i) for i in np.unravel_index(bad[0], array.shape))


def format_box(box) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in np.asarray(box, dtype=np.float64)) + "]"


def _nonfinite_message(ref: Instances, cand: Instances) -> Optional[tuple]:
    for side, inst in (("reference", ref), ("candidate", cand)):
        for name in ("boxes", "scores"):
            array = getattr(inst, name)
            where = first_nonfinite(array)
            if where is not None:
                value = array[where]
                index = ", ".join(str(i) for i in where)
                return (
                    f"{side} {name}[{index}] is {value} (instance {where[0]}); a non-finite "
                    "output never passes",
                    {"side": side, "field": name, "index": list(where), "value": str(value)},
                )
    return None


def _topk_cut(inst: Instances, topk: Optional[int]) -> Optional[float]:
    """The lowest score a side kept, when it kept exactly top-k (so it had to cut)."""
    if topk is None or len(inst) == 0 or len(inst) != topk:
        return None
    return float(inst.scores.min())


def _describe_instance(inst: Instances, i: int) -> str:
    label = "" if inst.labels is None else f", label {int(inst.labels[i])}"
    return f"box {format_box(inst.boxes[i])}, score {inst.scores[i]:.6g}{label}"


def _score_boundaries(ref, cand, score_threshold, topk):
    """Score boundaries that may explain an instance on one side only, per side.

    The threshold always may. A top-k cut explains an instance missing from side B only
    if B kept exactly top-k (it had to cut); the score must then sit near either side's
    cut. A side with room to spare had no reason to drop anything.
    """
    threshold = [] if score_threshold is None else [("score threshold", float(score_threshold))]
    cut_ref, cut_cand = _topk_cut(ref, topk), _topk_cut(cand, topk)
    cuts = [
        (f"top-k cut of the {name}", cut)
        for name, cut in (("reference", cut_ref), ("candidate", cut_cand))
        if cut is not None
    ]
    ref_only = threshold + (cuts if cut_cand is not None else [])
    cand_only = threshold + (cuts if cut_ref is not None else [])
    return ref_only, cand_only


def _judge_unmatched(side, inst, other, indices, overlaps_of, threshold, margin, boundaries):
    """Sort one side's unmatched instances into ignored / ambiguous / failing.

    boundaries: (name, value) score boundaries that can explain an instance appearing on
    this side only. An instance clearly below the score threshold is not a detection at
    this threshold, so its absence on the other side is no evidence of anything.
    """
    other_side = "candidate" if side == "reference" else "reference"
    ignored, ambiguous, failing = [], [], []
    for i in indices.tolist():
        score = float(inst.scores[i])
        if threshold is not None and score < threshold - margin:
            ignored.append(i)
            continue
        nearest = min(boundaries, key=lambda b: abs(score - b[1]), default=None)
        distance = abs(score - nearest[1]) if nearest else math.inf
        record = {
            "side": side,
            "index": i,
            "box": [float(v) for v in inst.boxes[i]],
            "score": score,
            "boundary": nearest[0] if nearest else None,
            "boundary_value": nearest[1] if nearest else None,
            "distance": distance,
        }
        if distance <= margin:
            ambiguous.append(record)
            continue
        overlaps = overlaps_of(i)
        if overlaps.size and overlaps.max() > 0:
            j = int(overlaps.argmax())
            nearby = f"best IoU {overlaps[j]:.2f} with {other_side} instance {j}, {_describe_instance(other, j)}"
        else:
            nearby = "it overlaps nothing there"
        if nearest:
            why = (
                f"its score is {distance:.3g} from the nearest boundary ({nearest[0]} "
                f"{nearest[1]:.6g}), beyond the ambiguity margin {margin:g}"
            )
        else:
            why = "no score threshold or top-k cut can explain a missing instance"
        record["description"] = (
            f"{side} instance {i} ({_describe_instance(inst, i)}) has no match in the "
            f"{other_side} ({nearby}); {why}"
        )
        failing.append(record)
    return ignored, ambiguous, failing


def _measure_pairs(ref, cand, matching) -> dict:
    """Per matched pair: IoU, worst corner error (px), |score difference|, label change."""
    ref_idx, cand_idx = matching.ref_index, matching.cand_index
    if ref.labels is not None and cand.labels is not None:
        label_differs = np.asarray(ref.labels)[ref_idx] != np.asarray(cand.labels)[cand_idx]
    else:
        label_differs = np.zeros(len(ref_idx), dtype=bool)
    return {
        "ref_idx": ref_idx,
        "cand_idx": cand_idx,
        "iou": matching.iou[ref_idx, cand_idx],
        "corner_px": np.abs(ref.boxes[ref_idx] - cand.boxes[cand_idx]).max(axis=1, initial=0.0),
        "score_abs": np.abs(ref.scores[ref_idx] - cand.scores[cand_idx]),
        "label_differs": label_differs,
    }


def _judge_pairs(ref, cand, pairs, tol) -> list:
    """The matched pairs out of tolerance, each with how far past its limit it is."""
    min_iou, corner_limit, score_limit = float(tol["min_iou"]), float(tol["corner_px"]), float(tol["score_abs"])
    # How far past its limit each metric is (>1 breaks it); a changed label is the worst.
    excess = np.stack(
        [
            (1.0 - pairs["iou"]) / max(1.0 - min_iou, 1e-12),
            pairs["corner_px"] / max(corner_limit, 1e-12),
            pairs["score_abs"] / max(score_limit, 1e-12),
            np.where(pairs["label_differs"], np.inf, 0.0),
        ],
        axis=1,
    )
    out_of_tolerance = (
        (pairs["iou"] < min_iou)
        | (pairs["corner_px"] > corner_limit)
        | (pairs["score_abs"] > score_limit)
        | pairs["label_differs"]
    )
    failures = []
    for p in np.flatnonzero(out_of_tolerance).tolist():
        r, c = int(pairs["ref_idx"][p]), int(pairs["cand_idx"][p])
        iou, corner, score = pairs["iou"][p], pairs["corner_px"][p], pairs["score_abs"][p]
        broken = ("IoU", "corner error", "score difference", "label")[int(np.argmax(excess[p]))]
        if broken == "label":
            lead = f"label {int(ref.labels[r])} became {int(cand.labels[c])}"
        elif broken == "IoU":
            lead = f"IoU {iou:.4f} < {min_iou:g}"
        elif broken == "corner error":
            lead = f"corner error {corner:.2f} px > {corner_limit:g} px"
        else:
            lead = f"score difference {score:.3g} > {score_limit:g}"
        failures.append(
            {
                "ref_index": r,
                "cand_index": c,
                "metric": broken,
                "excess": float(excess[p].max()),
                "iou": float(iou),
                "corner_px": float(corner),
                "score_abs": float(score),
                "description": (
                    f"reference instance {r} ({_describe_instance(ref, r)}) vs candidate instance "
                    f"{c} ({_describe_instance(cand, c)}): {lead} (IoU {iou:.4f}, corner error "
                    f"{corner:.2f} px, score difference {score:.3g})"
                ),
            }
        )
    return failures


def compare_boxes(
    ref: Instances,
    cand: Instances,
    tol: ResolvedTolerance,
    *,
    score_threshold: Optional[float] = None,
    topk: Optional[int] = None,
    output: str = "boxes",
) -> tuple[Comparison, Matching]:
    """Match by IoU, then judge pairs (IoU, corners, score, label) and leftovers."""
    margin = float(tol["ambiguity_margin"])
    matching = match_instances(ref, cand)

    def result(verdict, message, evidence=None):
        return Comparison.judged("boxes", output, tol, verdict, metrics, message, evidence), matching

    pairs = _measure_pairs(ref, cand, matching)
    metrics = {
        "n_ref": len(ref),
        "n_cand": len(cand),
        "n_matched": len(matching.pairs),
        # NaN when nothing was matched: there is no pair to measure.
        "min_iou": float(pairs["iou"].min()) if len(matching.pairs) else math.nan,
        "max_corner_px": float(pairs["corner_px"].max(initial=0.0)),
        "max_score_abs": float(pairs["score_abs"].max(initial=0.0)),
        "label_mismatches": int(pairs["label_differs"].sum()),
        "n_unmatched_ref": len(matching.unmatched_ref),
        "n_unmatched_cand": len(matching.unmatched_cand),
        "n_ambiguous": 0,
        "n_below_threshold": 0,
        "n_ref_above_threshold": int((ref.scores >= score_threshold).sum()) if score_threshold is not None else len(ref),
    }

    nonfinite = _nonfinite_message(ref, cand)
    if nonfinite is not None:
        message, where = nonfinite
        return result(Verdict.FAIL, message, {"nonfinite": where})

    if (ref.labels is None) != (cand.labels is None):
        has, lacks = ("reference", "candidate") if ref.labels is not None else ("candidate", "reference")
        return result(
            Verdict.FAIL,
            f"the {has} has class labels and the {lacks} has none: the two outputs are "
            "not decoded the same way",
        )

    ref_boundaries, cand_boundaries = _score_boundaries(ref, cand, score_threshold, topk)
    ignored_ref, ambiguous_ref, failing_ref = _judge_unmatched(
        "reference", ref, cand, matching.unmatched_ref, lambda i: matching.iou[i, :],
        score_threshold, margin, ref_boundaries,
    )
    ignored_cand, ambiguous_cand, failing_cand = _judge_unmatched(
        "candidate", cand, ref, matching.unmatched_cand, lambda j: matching.iou[:, j],
        score_threshold, margin, cand_boundaries,
    )
    ambiguous = ambiguous_ref + ambiguous_cand
    metrics["n_ambiguous"] = len(ambiguous)
    metrics["n_below_threshold"] = len(ignored_ref) + len(ignored_cand)

    if len(ref) == 0:
        if failing_cand:
            worst = max(failing_cand, key=lambda r: r["score"])
            return result(
                Verdict.FAIL,
                f"the reference found nothing but the candidate reports {len(failing_cand)} "
                f"confident instance(s); worst: {worst['description']}",
                {"worst": worst, "unmatched": failing_cand[:EVIDENCE_LIMIT]},
            )
        at_boundary = f" (the candidate's {len(cand)} lie at the score boundary or below it)" if len(cand) else ""
        return result(
            Verdict.VACUOUS,
            "the reference has no instances; nothing to compare" + at_boundary,
            {"ambiguous": ambiguous[:EVIDENCE_LIMIT]},
        )

    unmatched_failures = failing_ref + failing_cand
    pair_failures = _judge_pairs(ref, cand, pairs, tol)
    if unmatched_failures or pair_failures:
        # A confident instance that vanished outranks any pair that is merely off.
        if unmatched_failures:
            worst = max(unmatched_failures, key=lambda r: r["score"])
        else:
            worst = max(pair_failures, key=lambda r: r["excess"])
        summary = (
            f"{len(failing_ref)} reference and {len(failing_cand)} candidate instance(s) "
            f"unmatched, {len(pair_failures)} matched pair(s) out of tolerance, "
            f"{len(ambiguous)} ambiguous"
        )
        return result(
            Verdict.FAIL,
            f"worst: {worst['description']}. In all: {summary}",
            {
                "worst": worst,
                "unmatched": unmatched_failures[:EVIDENCE_LIMIT],
                "pairs": pair_failures[:EVIDENCE_LIMIT],
                "ambiguous": ambiguous[:EVIDENCE_LIMIT],
            },
        )

    if ambiguous:
        first = ambiguous[0]
        return result(
            Verdict.AMBIGUOUS,
            f"{len(ambiguous)} instance(s) appear on one side only, each within "
            f"{margin:g} of a score boundary; e.g. {first['side']} instance {first['index']} "
            f"(box {format_box(first['box'])}, score {first['score']:.6g}) is "
            f"{first['distance']:.3g} from the {first['boundary']} {first['boundary_value']:.6g}",
            {"ambiguous": ambiguous[:EVIDENCE_LIMIT]},
        )

    if not matching.pairs:
        return result(Verdict.VACUOUS, "no instance above the score threshold on either side; nothing to compare")

    # A top-k model always returns k instances: agreement on background priors that
    # found nobody is no evidence. Only reference detections above the threshold count.
    if score_threshold is not None and not (ref.scores >= score_threshold).any():
        return result(
            Verdict.VACUOUS,
            f"the reference has no instance scoring >= {score_threshold:g} (best {ref.scores.max():.3g}); "
            f"{len(matching.pairs)} low-score pair(s) agree, which proves nothing",
        )

    return result(
        Verdict.PASS,
        f"{len(matching.pairs)} instance(s) matched: min IoU {metrics['min_iou']:.4f}, "
        f"max corner error {metrics['max_corner_px']:.3g} px, max score difference "
        f"{metrics['max_score_abs']:.3g}",
    )
