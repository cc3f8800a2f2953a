"""Task agreement: what a reduced-precision deploy (INT8, FP16) does to the task, scored
with the task's own metric, the reference's answers taken as ground truth.

Per-instance parity says FAIL for a correct INT8 graph (boxes move by pixels, boundary
detections flip) and, loosened enough to pass it, PASS for a broken calibration. What a
user accepts such a deploy on is its effect on the task, so over a fixed, seeded
evaluation set (sizes across the case's space, rectangles and batches included):

  box AP, keypoint OKS-AP, mask AP  COCO's AP@[.5:.95] (pycocotools), the reference's
      instances as ground truth and the candidate's, with their scores, as detections;
      also per size, to say where it breaks
  per-instance distribution        matched pairs (same label, IoU >= 0.5): corner error
      median / p95 / max px, score difference, keypoint error, instances on one side only
      (flips at the threshold)

The budgets (the least AP a precision may keep) live in the tolerance table's
("agreement", backend, precision) rows, with their measurements.
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from typing import Optional

import numpy as np

from deploy_parity.compare.keypoints import _sigmas_for
from deploy_parity.compare.verdict import Comparison, Verdict

KINDS = {"boxes": "bbox", "keypoints": "keypoints", "masks": "segm"}
MASK_THRESHOLD = 0.5


def _paste(mask: np.ndarray, box, height: int, width: int) -> np.ndarray:
    """A per-ROI mask (M, M) pasted into its box on an image (nearest), or an image-sized one as it is."""
    if mask.shape == (height, width):
        return mask >= MASK_THRESHOLD
    canvas = np.zeros((height, width), dtype=bool)
    x1, y1, x2, y2 = [int(round(v)) for v in box]
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(width, max(x2, x1 + 1)), min(height, max(y2, y1 + 1))
    if x2 <= x1 or y2 <= y1:
        return canvas
    rows = np.clip(((np.arange(y1, y2) - y1 + 0.5) * mask.shape[0] / (y2 - y1)).astype(int), 0, mask.shape[0] - 1)
    cols = np.clip(((np.arange(x1, x2) - x1 + 0.5) * mask.shape[1] / (x2 - x1)).astype(int), 0, mask.shape[1] - 1)
    canvas[y1:y2, x1:x2] = mask[np.ix_(rows, cols)] >= MASK_THRESHOLD
    return canvas


def _annotations(instances, image_id: int, kind: str, detections: bool, start_id: int, sigmas_k: int) -> list:
    from pycocotools import mask as mask_utils

    out = []
    height, width = instances.image_size
    labels = instances.labels if instances.labels is not None else np.zeros(len(instances.scores), int)
    for i in range(len(instances.scores)):
        x1, y1, x2, y2 = (float(v) for v in instances.boxes[i])
        w, h = max(x2 - x1, 0.0), max(y2 - y1, 0.0)
        ann = {"id": start_id + i, "image_id": image_id, "category_id": int(labels[i]) + 1, "bbox": [x1, y1, w, h],
               "area": max(w * h, 1.0), "iscrowd": 0}
        if detections:
            ann["score"] = float(instances.scores[i])
        if kind == "keypoints":
            points = np.asarray(instances.keypoints[i], dtype=np.float64)
            flat = []
            for x, y, *_ in points:
                flat += [float(x), float(y), 2]
            ann["keypoints"] = flat
            ann["num_keypoints"] = len(points)
        if kind == "masks":
            pasted = _paste(np.asarray(instances.masks[i], dtype=np.float64), instances.boxes[i], height, width)
            rle = mask_utils.encode(np.asfortranarray(pasted.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            ann["segmentation"] = rle
            ann["area"] = float(max(pasted.sum(), 1))
        out.append(ann)
    return out


def coco_ap(pairs: list, kind: str, sigmas=None) -> Optional[dict]:
    """{"ap": AP@[.5:.95], "ap50": AP@.5} of the candidates against the references over
    `pairs` [(ref Instances, cand Instances)], or None when the references hold nothing."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, gts, dts, categories, k = [], [], [], set(), 0
    for image_id, (ref, cand) in enumerate(pairs, start=1):
        if kind == "keypoints" and (ref.keypoints is None or cand.keypoints is None):
            return None
        if kind == "masks" and (ref.masks is None or cand.masks is None):
            return None
        height, width = ref.image_size
        images.append({"id": image_id, "height": int(height), "width": int(width)})
        k = ref.keypoints.shape[1] if kind == "keypoints" and len(ref.keypoints) else k
        gts += _annotations(ref, image_id, kind, False, len(gts) + 1, k)
        dts += _annotations(cand, image_id, kind, True, len(dts) + 1, k)
    if not gts:
        return None
    for ann in gts + dts:
        categories.add(ann["category_id"])
    cats = [{"id": c, "name": str(c), **({"keypoints": [str(j) for j in range(k)], "skeleton": []}
                                          if kind == "keypoints" else {})} for c in sorted(categories)]
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": images, "annotations": gts, "categories": cats}
        truth.createIndex()
        found = truth.loadRes(dts) if dts else COCO()
        if not dts:
            return {"ap": 0.0, "ap50": 0.0, "references": len(gts), "candidates": 0}
        evaluation = COCOeval(truth, found, KINDS[kind])
        if kind != "keypoints":  # COCO's summary reads AP at the last maxDets: every detection counts
            evaluation.params.maxDets = [1, 10, max(100, max(_per_image_counts(dts)))]
        else:  # COCO's keypoint summary reads AP at 20 detections per image, as its benchmark does
            evaluation.params.maxDets = [20]
            evaluation.params.kpt_oks_sigmas = _sigmas_for(k, sigmas)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    return {"ap": max(float(stats[0]), 0.0), "ap50": max(float(stats[1]), 0.0), "references": len(gts),
            "candidates": len(dts)}


def _per_image_counts(anns: list) -> list:
    counts = defaultdict(int)
    for ann in anns:
        counts[ann["image_id"]] += 1
    return list(counts.values()) or [1]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: np.clip(z[:, 2] - z[:, 0], 0, None) * np.clip(z[:, 3] - z[:, 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def instance_errors(pairs: list) -> dict:
    """The per-instance distribution over matched pairs (same label, IoU >= 0.5, greedy by IoU)."""
    corners, scores, points, one_side, matched = [], [], [], 0, 0
    for ref, cand in pairs:
        if not len(ref.scores) or not len(cand.scores):
            one_side += len(ref.scores) + len(cand.scores)
            continue
        iou = _iou(ref.boxes, cand.boxes)
        if ref.labels is not None and cand.labels is not None:
            iou = np.where(ref.labels[:, None] == cand.labels[None, :], iou, 0.0)
        used_r, used_c = set(), set()
        for flat in np.argsort(-iou, axis=None):
            r, c = np.unravel_index(flat, iou.shape)
            if iou[r, c] < 0.5:
                break
            if r in used_r or c in used_c:
                continue
            used_r.add(r)
            used_c.add(c)
            corners.append(float(np.abs(ref.boxes[r] - cand.boxes[c]).max()))
            scores.append(float(abs(ref.scores[r] - cand.scores[c])))
            if ref.keypoints is not None and cand.keypoints is not None:
                points.append(float(np.hypot(*(np.asarray(ref.keypoints[r])[:, :2]
                                                - np.asarray(cand.keypoints[c])[:, :2]).T).max()))
        matched += len(used_r)
        one_side += len(ref.scores) - len(used_r) + len(cand.scores) - len(used_c)

    def spread(values, name):
        if not values:
            return {}
        v = np.asarray(values)
        return {f"{name}_median": float(np.median(v)), f"{name}_p95": float(np.percentile(v, 95)),
                f"{name}_max": float(v.max())}

    return {"matched": matched, "one_side_only": one_side, **spread(corners, "corner_px"),
            **spread(scores, "score_diff"), **spread(points, "keypoint_px")}


def judge_agreement(groups: dict, row, sigmas=None, label: str = "") -> list:
    """Comparisons, one per task metric, over `groups` {size label: [(ref, cand) per image]}:
    FAIL below the row's budget overall, with the size where it is worst."""
    everything = [pair for pairs in groups.values() for pair in pairs]
    comparisons = []
    errors = instance_errors(everything)
    for kind, field_name in (("boxes", "box_ap"), ("keypoints", "keypoint_ap"), ("masks", "mask_ap")):
        overall = coco_ap(everything, kind, sigmas)
        if overall is None:
            continue
        budget = float(row[field_name])
        per_size = {size: coco_ap(pairs, kind, sigmas) for size, pairs in groups.items()}
        per_size = {size: value["ap"] for size, value in per_size.items() if value is not None}
        worst = min(per_size, key=per_size.get) if per_size else None
        metrics = {"ap": overall["ap"], "ap50": overall["ap50"], "references": overall["references"],
                   "candidates": overall["candidates"], **errors,
                   **({"worst_size": worst, "worst_size_ap": per_size[worst]} if worst else {})}
        where = f"; worst at {worst}: AP {per_size[worst]:.3f}" if worst else ""
        text = (f"{kind} AP {overall['ap']:.3f} (AP50 {overall['ap50']:.3f}) against the reference as ground truth, "
                f"over {len(everything)} images of {len(groups)} sizes{where}; matched instances: corner error "
                f"median {errors.get('corner_px_median', float('nan')):.3g} px, p95 "
                f"{errors.get('corner_px_p95', float('nan')):.3g} px, max {errors.get('corner_px_max', float('nan')):.3g}"
                f" px; {errors['one_side_only']} instance(s) on one side only")
        if overall["ap"] < budget:
            comparisons.append(Comparison(kind, f"{label}task agreement", Verdict.FAIL,
                                          {**metrics, "per_size_ap": per_size},
                                          f"{text}: below the budget {budget:g}", dict(row.values), row.source))
        else:
            comparisons.append(Comparison(kind, f"{label}task agreement", Verdict.PASS,
                                          {**metrics, "per_size_ap": per_size}, f"{text}; budget {budget:g}",
                                          dict(row.values), row.source))
    return comparisons
