"""Boxes: pair instances one-to-one by overlap, then judge each pair and each leftover.

Instance order carries no meaning, so boxes are matched by IoU, never by position. An
instance present on one side only is a failure unless its score sits on a decision
boundary (the score threshold, or the top-k cut of a side that had to cut), where a
rounding difference may legitimately keep it on one side and drop it on the other.

Pairs are formed greedily by overlap, best first, within a label before across labels
(as COCO's evaluation does): an optimal assignment that maximises the number of pairs
invents chains of wrong pairs when two different boxes tie at a cut. A pair whose two
instances both sit at a score boundary, or whose candidate is a box the reference
suppressed in NMS for a tied score, is excused as ambiguous and judged no further.
Zero-area boxes have no IoU (0/0): they are matched and judged by corner distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .instances import Instances
from .tolerances import ResolvedTolerance
from .verdict import Comparison, Verdict, beyond, side_name

# Pairs overlapping less than this are not the same object. Deliberately far below any
# tolerance's min_iou: a badly shifted box should be reported as "IoU 0.6 < 0.99", not
# as one dropped box plus one hallucinated box.
MATCH_MIN_IOU = 0.1

# Zero-area boxes (IoU 0/0) pair with candidates whose corners lie within this many
# pixels; the pair is then judged by its corner error alone.
DEGENERATE_MATCH_PX = 8.0

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
    # Pairs the box judgement excused as ambiguous (different objects swapped at a score
    # boundary or an NMS tie): keypoints, masks and the shift check skip them.
    excused: set = field(default_factory=set)

    @property
    def ref_index(self) -> np.ndarray:
        return np.array([r for r, _ in self.pairs], dtype=np.intp)

    @property
    def cand_index(self) -> np.ndarray:
        return np.array([c for _, c in self.pairs], dtype=np.intp)

    def judged_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(ref indices, cand indices) of the pairs not excused, in reference order."""
        kept = [(r, c) for r, c in self.pairs if (r, c) not in self.excused]
        return (np.array([r for r, _ in kept], dtype=np.intp), np.array([c for _, c in kept], dtype=np.intp))


def box_area(boxes) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def corner_distance(a, b) -> np.ndarray:
    """Largest absolute corner coordinate difference of every box in `a` with every box in `b`."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return np.abs(a[:, None, :] - b[None, :, :]).max(axis=-1, initial=0.0)


def iou_at_corner_error(boxes, corner_px: float) -> np.ndarray:
    """The IoU a box keeps when every corner moves by `corner_px` (the worst case: the box
    shrinks by corner_px on each side). The IoU limit of a pair is never stricter than
    this, so a 2-px box is judged by its corners, not by an IoU it cannot keep."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = np.clip(boxes[:, 2] - boxes[:, 0], 0, None)
    h = np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    inner = np.clip(w - 2 * corner_px, 0, None) * np.clip(h - 2 * corner_px, 0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w * h > 0, inner / np.maximum(w * h, 1e-300), 0.0)


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


def _greedy_pairs(similarity: np.ndarray, allowed: np.ndarray, rows_used, cols_used) -> list:
    """Pairs by descending similarity (ties: lower reference, then candidate index first),
    each instance used once. Never trades a good pair for more pairs."""
    candidates = np.argwhere(allowed)
    if candidates.size == 0:
        return []
    values = similarity[candidates[:, 0], candidates[:, 1]]
    order = np.lexsort((candidates[:, 1], candidates[:, 0], -values))
    pairs = []
    for r, c in candidates[order].tolist():
        if r in rows_used or c in cols_used:
            continue
        rows_used.add(r)
        cols_used.add(c)
        pairs.append((r, c))
    return pairs


def match_instances(ref: Instances, cand: Instances, min_iou: float = MATCH_MIN_IOU,
                    degenerate_px: float = DEGENERATE_MATCH_PX) -> Matching:
    """One-to-one pairs by overlap, greedily best first: within a label, then across labels
    (so a changed label is reported as such). Pairs overlapping less than `min_iou` are
    never formed; a zero-area box pairs by corner distance (<= degenerate_px) instead.
    Non-finite boxes overlap nothing.
    """
    iou = box_iou(ref.boxes, cand.boxes)
    similarity = np.nan_to_num(iou, nan=0.0, posinf=0.0, neginf=0.0)
    degenerate = (box_area(ref.boxes)[:, None] == 0) | (box_area(cand.boxes)[None, :] == 0)
    if degenerate.any():
        distance = np.nan_to_num(corner_distance(ref.boxes, cand.boxes), nan=np.inf)
        near = distance <= degenerate_px
        closeness = min_iou + (1.0 - min_iou) * (1.0 - distance / max(degenerate_px, 1e-12))
        similarity = np.where(degenerate, np.where(near, closeness, 0.0), similarity)
    eligible = similarity >= min_iou
    rows_used, cols_used = set(), set()
    if ref.labels is not None and cand.labels is not None and eligible.size:
        same_label = np.asarray(ref.labels).reshape(-1)[:, None] == np.asarray(cand.labels).reshape(-1)[None, :]
        pairs = _greedy_pairs(similarity, eligible & same_label, rows_used, cols_used)
        pairs += _greedy_pairs(similarity, eligible & ~same_label, rows_used, cols_used)
    else:
        pairs = _greedy_pairs(similarity, eligible, rows_used, cols_used)
    pairs.sort()
    return Matching(
        pairs=pairs,
        iou=iou,
        unmatched_ref=np.array([i for i in range(len(ref)) if i not in rows_used], dtype=np.intp),
        unmatched_cand=np.array([j for j in range(len(cand)) if j not in cols_used], dtype=np.intp),
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


def nonfinite_failure(ref_array, cand_array, describe, find=first_nonfinite) -> Optional[tuple[str, dict]]:
    """The message and evidence of a FAIL for the first NaN/inf element, the reference's
    looked for before the candidate's; None when both are finite.

    describe(index, value) says which element it is and what it holds ("mask of instance
    2 is nan at pixel (y 3, x 4)"); find(array) gives the element's index or None.
    """
    for side, array in (("reference", ref_array), ("candidate", cand_array)):
        where = find(array)
        if where is not None:
            value = array[where]
            return (
                f"{side_name(side)} {describe(where, value)}; a non-finite output never passes",
                {"nonfinite": {"side": side, "index": list(where), "value": str(value)}},
            )
    return None


def instance_shape_failure(what: str, ref_array, cand_array, qualifier: str = "") -> Optional[tuple[str, None]]:
    """The message (and no evidence) of a FAIL when one instance's array has another shape
    on each side ("mask size differs: ..."); None when the shapes agree."""
    if ref_array.shape[1:] == cand_array.shape[1:]:
        return None
    return (f"{what} differs: {side_name('reference')} {ref_array.shape[1:]}{qualifier}, "
            f"{side_name('candidate')} {cand_array.shape[1:]}", None)


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
                    f"{side_name(side)} {name}[{index}] is {value} (instance {where[0]}); a non-finite "
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
        (f"top-k cut of the {side_name(role)}", cut)
        for role, cut in (("reference", cut_ref), ("candidate", cut_cand))
        if cut is not None
    ]
    ref_only = threshold + (cuts if cut_cand is not None else [])
    cand_only = threshold + (cuts if cut_ref is not None else [])
    return ref_only, cand_only


def _judge_unmatched(side, inst, other, indices, overlaps_of, threshold, margin, boundaries, nms_tie_of=None):
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
        tie = nms_tie_of(i) if nms_tie_of is not None else None
        if tie is not None:
            record.update(tie)
            ambiguous.append(record)
            continue
        overlaps = overlaps_of(i)
        if overlaps.size and overlaps.max() > 0:
            j = int(overlaps.argmax())
            nearby = (f"best IoU {overlaps[j]:.2f} with {side_name(other_side)} instance {j}, "
                      f"{_describe_instance(other, j)}")
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
            f"{side_name(side)} instance {i} ({_describe_instance(inst, i)}) has no match in the "
            f"{side_name(other_side)} ({nearby}); {why}"
        )
        failing.append(record)
    return ignored, ambiguous, failing


def nms_tie(ref: Instances, cand_box, tol: ResolvedTolerance, kept_by: Optional[int] = None) -> Optional[dict]:
    """Evidence that `cand_box` is a box the reference's own NMS suppressed in favour of
    an instance whose score ties with it (within the ambiguity margin): which of two tied
    boxes NMS keeps is arbitrary, so a backend keeping the other one is no bug.

    Needs the reference's NMS record, ref.extra["nms_suppressed"] = {"boxes": (S, 4),
    "scores": (S,), "by": (S,) index of the kept instance that suppressed it}, written by
    the harness's own NMS (deploy_parity/adapters/nms.py). None when there is no such tie.
    """
    record = ref.extra.get("nms_suppressed") if ref.extra else None
    if not record or len(record.get("scores", ())) == 0:
        return None
    boxes = np.asarray(record["boxes"], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(record["scores"], dtype=np.float64).reshape(-1)
    by = np.asarray(record["by"]).reshape(-1).astype(np.intp)
    same_box = (corner_distance(boxes, cand_box)[:, 0] <= float(tol["corner_px"])) | (
        np.nan_to_num(box_iou(boxes, cand_box)[:, 0]) >= float(tol["min_iou"]))
    tied = np.abs(scores - ref.scores[by]) <= float(tol["ambiguity_margin"])
    hits = same_box & tied
    if kept_by is not None:
        hits &= by == kept_by
    if not hits.any():
        return None
    s = int(np.flatnonzero(hits)[0])
    k = int(by[s])
    return {
        "boundary": f"NMS tie with {side_name('reference')} instance {k}",
        "boundary_value": float(ref.scores[k]),
        "distance": float(abs(scores[s] - ref.scores[k])),
        "suppressed_box": [float(v) for v in boxes[s]],
        "suppressed_score": float(scores[s]),
    }


def nms_iou_boundary(inst: Instances, other: Instances, i: int, overlaps, nms_iou_threshold: Optional[float],
                     tol: ResolvedTolerance) -> Optional[dict]:
    """Evidence that instance `i`, present on one side only, sits at the model's NMS IoU
    threshold: it overlaps a same-label instance of the other side by an IoU within the
    IoU the tolerance lets a pair move (1 - min_iou) of the threshold. Kept where its
    overlap came out just below the threshold, suppressed where just above: which side
    of it a box falls is rounding (seen on an H200: mask-rcnn under fp16 kept a box at
    IoU 0.50 with a kept neighbour that fp32 suppressed at torchvision's 0.5)."""
    if nms_iou_threshold is None or overlaps.size == 0:
        return None
    margin = 1.0 - float(tol["min_iou"])
    near = np.abs(np.nan_to_num(overlaps, nan=-1.0) - nms_iou_threshold) <= margin
    if inst.labels is not None and other.labels is not None:
        near &= np.asarray(other.labels).reshape(-1) == np.asarray(inst.labels).reshape(-1)[i]
    if not near.any():
        return None
    j = int(np.flatnonzero(near)[np.argmin(np.abs(overlaps[near] - nms_iou_threshold))])
    return {
        "boundary": f"NMS IoU threshold {nms_iou_threshold:g} (IoU {overlaps[j]:.3f} with instance {j} of the other side)",
        "boundary_value": float(nms_iou_threshold),
        "distance": float(abs(overlaps[j] - nms_iou_threshold)),
    }


def score_limit(tol: ResolvedTolerance, ref_scores) -> np.ndarray:
    """Allowed |score difference| per reference score: absolute plus relative (scores
    may be unbounded logits, e.g. heatmap maxima near 25)."""
    return float(tol["score_abs"]) + float(tol.values.get("score_rtol", 0.0)) * np.abs(np.asarray(ref_scores, dtype=np.float64))


def _measure_pairs(ref, cand, matching) -> dict:
    """Per matched pair: IoU, worst corner error (px), |score difference|, label change."""
    ref_idx, cand_idx = matching.ref_index, matching.cand_index
    if ref.labels is not None and cand.labels is not None:
        label_differs = np.asarray(ref.labels)[ref_idx] != np.asarray(cand.labels)[cand_idx]
    else:
        label_differs = np.zeros(len(ref_idx), dtype=bool)
    degenerate = (box_area(ref.boxes[ref_idx]) == 0) | (box_area(cand.boxes[cand_idx]) == 0)
    return {
        "ref_idx": ref_idx,
        "cand_idx": cand_idx,
        "degenerate": degenerate,
        "iou": matching.iou[ref_idx, cand_idx],
        "corner_px": np.abs(ref.boxes[ref_idx] - cand.boxes[cand_idx]).max(axis=1, initial=0.0),
        "score_abs": np.abs(ref.scores[ref_idx] - cand.scores[cand_idx]),
        "label_differs": label_differs,
    }


def _within_own_rounding(unstable: Optional[dict], r: int, pairs: dict, p: int, ref, tol, allowed_score) -> Optional[str]:
    """Why a failing pair is a knife edge, or None: its reference instance is numerically
    unstable (its own float32 and shadow runs differ far beyond the rest of the example,
    deploy_parity/compare/noise.py), and the pair is within the limits that instance's own
    rounding sets. A changed label is never excused."""
    own = (unstable or {}).get(int(r))
    if own is None or pairs["label_differs"][p]:
        return None
    corner = max(float(tol["corner_px"]), own["limits"].get(("boxes", "corner_px"), 0.0))
    score = max(float(allowed_score[p]), own["limits"].get(("boxes", "score_abs"), 0.0))
    iou = min(float(tol["min_iou"]), float(iou_at_corner_error(ref.boxes[r], corner)[0]))
    if (pairs["corner_px"][p] <= corner and pairs["score_abs"][p] <= score
            and (pairs["degenerate"][p] or pairs["iou"][p] >= iou)):
        return "; ".join(own["why"])
    return None


def _judge_pairs(ref, cand, pairs, tol, boundary_distance, margin, unstable=None) -> tuple[list, list]:
    """(failures, excused): the matched pairs out of tolerance, each with how far past its
    limit it is, and the failing pairs excused because the reference sits on a boundary.

    boundary_distance(side, score) -> (distance, boundary name, value) to the nearest score
    boundary that can explain that side's instance appearing alone.
    """
    min_iou, corner_limit = float(tol["min_iou"]), float(tol["corner_px"])
    # The IoU limit never asks more than the corner limit already allows for this box;
    # a zero-area box has no IoU at all (0/0) and is judged by its corners.
    iou_limit = np.minimum(min_iou, iou_at_corner_error(ref.boxes[pairs["ref_idx"]], corner_limit))
    iou_judged = ~pairs["degenerate"]
    allowed_score = score_limit(tol, ref.scores[pairs["ref_idx"]])
    # How far past its limit each metric is (>1 breaks it); a changed label is the worst.
    excess = np.stack(
        [
            np.where(iou_judged, (1.0 - pairs["iou"]) / np.maximum(1.0 - iou_limit, 1e-12), 0.0),
            pairs["corner_px"] / max(corner_limit, 1e-12),
            pairs["score_abs"] / np.maximum(allowed_score, 1e-12),
            np.where(pairs["label_differs"], np.inf, 0.0),
        ],
        axis=1,
    )
    out_of_tolerance = (
        (iou_judged & (pairs["iou"] < iou_limit))
        | (pairs["corner_px"] > corner_limit)
        | (pairs["score_abs"] > allowed_score)
        | pairs["label_differs"]
    )
    failures, excused = [], []
    for p in np.flatnonzero(out_of_tolerance).tolist():
        r, c = int(pairs["ref_idx"][p]), int(pairs["cand_idx"][p])
        iou, corner, score = pairs["iou"][p], pairs["corner_px"][p], pairs["score_abs"][p]
        broken = ("IoU", "corner error", "score difference", "label")[int(np.argmax(excess[p]))]
        if broken == "label":
            lead = f"label {int(ref.labels[r])} became {int(cand.labels[c])}"
        elif broken == "IoU":
            lead = f"IoU {iou:.4f} < {iou_limit[p]:.4g}"
        elif broken == "corner error":
            lead = f"corner error {beyond(corner, corner_limit, ' px')}{tol.explain('corner_px', ' px')}"
        else:
            lead = f"score difference {beyond(score, allowed_score[p])}{tol.explain('score_abs')}"
        record = {
            "ref_index": r,
            "cand_index": c,
            "metric": broken,
            "excess": float(excess[p].max()),
            "iou": float(iou),
            "corner_px": float(corner),
            "score_abs": float(score),
            "ref_score": float(ref.scores[r]),
            "description": (
                f"{side_name('reference')} instance {r} ({_describe_instance(ref, r)}) vs "
                f"{side_name('candidate')} instance {c} ({_describe_instance(cand, c)}): {lead} (IoU {iou:.4f}, corner error "
                f"{corner:.3g} px, score difference {score:.3g})"
            ),
        }
        edge = _within_own_rounding(unstable, r, pairs, p, ref, tol, allowed_score)
        if edge is not None:
            record["why"] = (f"a rounding knife edge: the {side_name('reference')}'s own float32 and shadow runs "
                             f"move this instance far more than the rest of the example ({edge}), and the pair is "
                             "within what that rounding explains")
            excused.append(record)
            continue
        if broken != "score difference":
            # Two different objects paired only because each crossed a boundary: the
            # reference kept one at the cut, the candidate the other; or the candidate kept
            # a box the reference's NMS suppressed for a tied score.
            ref_at, ref_boundary, _ = boundary_distance("reference", ref.scores[r])
            cand_at, cand_boundary, _ = boundary_distance("candidate", cand.scores[c])
            tie = nms_tie(ref, cand.boxes[c], tol, kept_by=r)
            if tie is not None:
                record.update(tie, why=f"the {side_name('candidate')} kept a box the {side_name('reference')} "
                                       "suppressed in NMS "
                                       f"for a score tied within {tie['distance']:.3g} ({tie['boundary']})")
                excused.append(record)
                continue
            if ref_at <= margin and cand_at <= margin:
                record["why"] = (f"both sit at a score boundary ({side_name('reference')} {ref_at:.3g} from the "
                                 f"{ref_boundary}, {side_name('candidate')} {cand_at:.3g} from the {cand_boundary}): "
                                 "different objects kept at the cut")
                excused.append(record)
                continue
        failures.append(record)
    return failures, excused


def _confident_first(records, score_threshold):
    """Records about instances scoring at or above the threshold first: a reader should
    meet a lost detection before a background prior at score 0.004."""
    if score_threshold is None:
        return records
    return sorted(records, key=lambda rec: rec.get("ref_score", rec.get("score", 0.0)) < score_threshold)


def compare_boxes(
    ref: Instances,
    cand: Instances,
    tol: ResolvedTolerance,
    *,
    score_threshold: Optional[float] = None,
    topk: Optional[int] = None,
    output: str = "boxes",
    nms_iou_threshold: Optional[float] = None,
    unstable: Optional[dict] = None,
) -> tuple[Comparison, Matching]:
    """Match by IoU, then judge pairs (IoU, corners, score, label) and leftovers.

    nms_iou_threshold: the model's own NMS IoU threshold; an instance on one side only
    that overlaps a same-label instance of the other side at that IoU is ambiguous.
    unstable: NoiseFloor.unstable of this image, the numerically unstable reference
    instances with the limits their own rounding sets: a pair on one of them that fails
    the example's limits but keeps its own is ambiguous (a knife edge); a leftover or a
    changed label never is."""
    margin = float(tol["ambiguity_margin"])
    matching = match_instances(ref, cand)

    def result(verdict, message, evidence=None):
        return Comparison.judged("boxes", output, tol, verdict, metrics, message, evidence), matching

    pairs = _measure_pairs(ref, cand, matching)
    judged_iou = pairs["iou"][~pairs["degenerate"]]
    metrics = {
        "n_ref": len(ref),
        "n_cand": len(cand),
        "n_matched": len(matching.pairs),
        # NaN when no pair with an area was matched: there is no IoU to measure.
        "min_iou": float(judged_iou.min()) if judged_iou.size else math.nan,
        "max_corner_px": float(pairs["corner_px"].max(initial=0.0)),
        "max_score_abs": float(pairs["score_abs"].max(initial=0.0)),
        "label_mismatches": int(pairs["label_differs"].sum()),
        "n_unmatched_ref": len(matching.unmatched_ref),
        "n_unmatched_cand": len(matching.unmatched_cand),
        "n_degenerate_pairs": int(pairs["degenerate"].sum()),
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
            f"the {side_name(has)} has class labels and the {side_name(lacks)} has none: the two outputs are "
            "not decoded the same way",
        )

    ref_boundaries, cand_boundaries = _score_boundaries(ref, cand, score_threshold, topk)

    def boundary_distance(side, score):
        boundaries = ref_boundaries if side == "reference" else cand_boundaries
        nearest = min(boundaries, key=lambda b: abs(float(score) - b[1]), default=None)
        if nearest is None:
            return math.inf, None, None
        return abs(float(score) - nearest[1]), nearest[0], nearest[1]

    ignored_ref, ambiguous_ref, failing_ref = _judge_unmatched(
        "reference", ref, cand, matching.unmatched_ref, lambda i: matching.iou[i, :],
        score_threshold, margin, ref_boundaries,
        nms_tie_of=lambda i: nms_iou_boundary(ref, cand, i, matching.iou[i, :], nms_iou_threshold, tol),
    )
    ignored_cand, ambiguous_cand, failing_cand = _judge_unmatched(
        "candidate", cand, ref, matching.unmatched_cand, lambda j: matching.iou[:, j],
        score_threshold, margin, cand_boundaries,
        nms_tie_of=lambda j: (nms_tie(ref, cand.boxes[j], tol)
                              or nms_iou_boundary(cand, ref, j, matching.iou[:, j], nms_iou_threshold, tol)),
    )
    pair_failures, excused_pairs = _judge_pairs(ref, cand, pairs, tol, boundary_distance, margin, unstable)
    matching.excused = {(rec["ref_index"], rec["cand_index"]) for rec in excused_pairs}
    ambiguous = ambiguous_ref + ambiguous_cand + excused_pairs
    metrics["n_ambiguous"] = len(ambiguous)
    metrics["n_below_threshold"] = len(ignored_ref) + len(ignored_cand)

    if len(ref) == 0:
        if failing_cand:
            worst = max(failing_cand, key=lambda r: r["score"])
            return result(
                Verdict.FAIL,
                f"the {side_name('reference')} found nothing but the {side_name('candidate')} reports "
                f"{len(failing_cand)} "
                f"confident instance(s); worst: {worst['description']}",
                {"worst": worst, "unmatched": failing_cand[:EVIDENCE_LIMIT]},
            )
        at_boundary = f" (the {side_name('candidate')}'s {len(cand)} lie at the score boundary or below it)" if len(cand) else ""
        return result(
            Verdict.VACUOUS,
            f"the {side_name('reference')} has no instances; nothing to compare" + at_boundary,
            {"ambiguous": ambiguous[:EVIDENCE_LIMIT]},
        )

    unmatched_failures = failing_ref + failing_cand
    if unmatched_failures or pair_failures:
        # A confident instance that vanished outranks any pair that is merely off, and a
        # pair of confident instances outranks background priors far below the threshold.
        if unmatched_failures:
            worst = max(unmatched_failures, key=lambda r: r["score"])
        else:
            worst = _confident_first(sorted(pair_failures, key=lambda r: -r["excess"]), score_threshold)[0]
        summary = (
            f"{len(failing_ref)} {side_name('reference')} and {len(failing_cand)} {side_name('candidate')} "
            "instance(s) "
            f"unmatched, {len(pair_failures)} matched pair(s) out of tolerance, "
            f"{len(ambiguous)} ambiguous"
        )
        return result(
            Verdict.FAIL,
            f"worst: {worst['description']}. In all: {summary}",
            {
                "worst": worst,
                "unmatched": _confident_first(unmatched_failures, score_threshold)[:EVIDENCE_LIMIT],
                "pairs": _confident_first(sorted(pair_failures, key=lambda r: -r["excess"]), score_threshold)[:EVIDENCE_LIMIT],
                "ambiguous": ambiguous[:EVIDENCE_LIMIT],
            },
        )

    if ambiguous:
        first = ambiguous[0]
        if "why" in first:  # an excused pair
            detail = f"e.g. {first['description']}; excused: {first['why']}"
        else:
            detail = (f"e.g. {side_name(first['side'])} instance {first['index']} (box {format_box(first['box'])}, score "
                      f"{first['score']:.6g}) is {first['distance']:.3g} from the {first['boundary']} "
                      f"{first['boundary_value']:.6g}")
        return result(
            Verdict.AMBIGUOUS,
            f"{len(ambiguous)} instance(s) or pair(s) differ only where the {side_name('reference')} sits on a "
            "decision "
            f"boundary (within {margin:g} of a score threshold, top-k cut or tied NMS competitor, or a box its own "
            f"rounding moves far more than the rest of the image); {detail}",
            {"ambiguous": ambiguous[:EVIDENCE_LIMIT]},
        )

    if not matching.pairs:
        return result(Verdict.VACUOUS, "no instance above the score threshold on either side; nothing to compare")

    # A top-k model always returns k instances: agreement on background priors that
    # found nobody is no evidence. Only reference detections above the threshold count.
    if score_threshold is not None and not (ref.scores >= score_threshold).any():
        return result(
            Verdict.VACUOUS,
            f"the {side_name('reference')} has no instance scoring >= {score_threshold:g} (best {ref.scores.max():.3g}); "
            f"{len(matching.pairs)} low-score pair(s) agree, which proves nothing",
        )

    iou_text = f"min IoU {metrics['min_iou']:.4f}, " if judged_iou.size else ""
    degenerate_text = (f" ({metrics['n_degenerate_pairs']} zero-area, judged by corners)"
                       if metrics["n_degenerate_pairs"] else "")
    return result(
        Verdict.PASS,
        f"{len(matching.pairs)} instance(s) matched{degenerate_text}: {iou_text}"
        f"max corner error {metrics['max_corner_px']:.3g} px, max score difference "
        f"{metrics['max_score_abs']:.3g}",
    )
