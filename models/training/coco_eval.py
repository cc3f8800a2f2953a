"""COCO metrics (box AP, keypoint OKS AP, mask AP) via pycocotools, on synthetic scenes.

Ground truth comes straight from rendered scenes; predictions are per-image dicts of
numpy arrays. Nothing here is a hand-written AP: pycocotools does the matching.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from deploy_parity.scenes.render import CLASS_NAMES, LABEL_PERSON
from deploy_parity.scenes.skeleton import KEYPOINT_NAMES, SKELETON


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _categories():
    cats = []
    for label, name in enumerate(CLASS_NAMES):
        if label == 0:
            continue
        cat = {"id": label, "name": name}
        if label == LABEL_PERSON:
            cat["keypoints"] = list(KEYPOINT_NAMES)
            cat["skeleton"] = [[a + 1, b + 1] for a, b in SKELETON]
        cats.append(cat)
    return cats


def coco_ground_truth(scenes) -> dict:
    images, annotations = [], []
    for image_id, scene in enumerate(scenes):
        height, width = scene.image.shape[:2]
        images.append({"id": image_id, "height": height, "width": width})
        for r in range(len(scene.labels)):
            x1, y1, x2, y2 = (float(v) for v in scene.boxes[r])
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(scene.labels[r]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float(scene.masks[r].sum()),
                "iscrowd": 0,
                "segmentation": _rle(scene.masks[r]),
            }
            if scene.labels[r] == LABEL_PERSON:
                kpts = scene.keypoints[r].copy()
                ann["keypoints"] = kpts.reshape(-1).tolist()
                ann["num_keypoints"] = int((kpts[:, 2] > 0).sum())
            annotations.append(ann)
    return {"images": images, "annotations": annotations, "categories": _categories()}


def coco_detections(predictions, with_keypoints: bool, with_masks: bool) -> list:
    """predictions[i]: dict boxes (R,4) xyxy, scores (R,), labels (R,), keypoints (R,17,3), masks (R,H,W) bool."""
    results = []
    for image_id, pred in enumerate(predictions):
        for r in range(len(pred["scores"])):
            x1, y1, x2, y2 = (float(v) for v in pred["boxes"][r])
            det = {"image_id": image_id, "category_id": int(pred["labels"][r]),
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(pred["scores"][r])}
            if with_keypoints and "keypoints" in pred:
                det["keypoints"] = np.asarray(pred["keypoints"][r], dtype=float).reshape(-1).tolist()
            if with_masks and "masks" in pred:
                det["segmentation"] = _rle(pred["masks"][r])
            results.append(det)
    return results


def coco_ap(scenes, predictions, iou_type: str = "bbox", category_ids=None) -> dict:
    """{'AP': ..., 'AP50': ..., 'AP75': ...} for iou_type in bbox | keypoints | segm."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    detections = coco_detections(predictions, iou_type == "keypoints", iou_type == "segm")
    if iou_type == "keypoints":
        detections = [d for d in detections if d["category_id"] == LABEL_PERSON]
    if not detections:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "detections": 0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = coco_ground_truth(scenes)
        gt.createIndex()
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, iou_type)
        if iou_type == "keypoints":
            evaluator.params.catIds = [LABEL_PERSON]
        elif category_ids:
            evaluator.params.catIds = list(category_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"AP": float(stats[0]), "AP50": float(stats[1]), "AP75": float(stats[2]), "detections": len(detections)}
