"""Ultralytics YOLO outputs (detect, pose, segment), read the way Ultralytics reads them.

Two forms, one adapter, `UltralyticsYOLO(task, form=...)`:

raw (the default ONNX export, and what the Detect / Pose / Segment heads return in
export mode):
  output0 (B, 4 + nc + E, N), one column per anchor: cx cy w h in input pixels, nc
      class scores (already sigmoid), then E task channels: pose 3K keypoint values
      (x y in pixels and a sigmoid visibility, keypoint by keypoint), segment 32 mask
      coefficients; detect none.
  output1 (B, 32, H/4, W/4), segment only: the mask prototypes.
  Decoding and NMS run here, in the harness, on the reference and the candidate alike,
  as `ultralytics.utils.nms.non_max_suppression` does it for `predict`: best class
  only, candidates with score > conf, class-aware NMS (IoU > iou suppresses), at most
  max_det kept. The NMS is deploy_parity/adapters/nms.py: ties break by anchor order,
  and what each kept box suppressed goes to Instances.extra["nms_suppressed"] (`by` =
  its suppressor's position among the kept instances), so a backend that keeps the
  other of two tied boxes is AMBIGUOUS, not a failure.

end2end (`model.export(format="onnx", nms=True)`, or an NMS-free one-to-one head):
  output0 (B, max_det, 6 + E): x1 y1 x2 y2 score class [task channels], rows padded
      with zeros; (segment) output1 the prototypes as above. Rows with score > conf
      are read, as Ultralytics' predictor does. The NMS ran inside the graph, so no
      record of its ties exists: prefer the raw form for parity.

Masks are sigmoid(coefficients @ prototypes) at prototype resolution (H/4, W/4),
cropped to the box scaled to that resolution, and kept soft (the comparator thresholds
at 0.5, as Ultralytics does with its logit > 0, and excuses pixels at the threshold).
Ultralytics' crop_mask keeps a whole prototype pixel when its left/top edge lies in the
box, a step in the box coordinates: a corner moving by 1e-5 px across a pixel edge
would switch a whole mask column on or off. The default crop ("coverage") instead
weights each edge pixel by the fraction of it the box covers: the same mask inside
the box and outside it, continuous at the edges. crop="hard" is Ultralytics' own.

What a torch module returns is unwrapped by `named_outputs`: eager models in eval mode
return (y, raw prediction dict), segment ((y, proto), dict); in export mode (head
`.export = True`) y, or (y, proto); Ultralytics' NMSModel wrapper (nms=True export)
returns the end-to-end tensor, or (tensor, proto).
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from deploy_parity.adapters.base import Adapter
from deploy_parity.adapters.nms import nms
from deploy_parity.case import OutputSpec
from deploy_parity.compare.instances import Instances
from deploy_parity.errors import ModelCaseError

TASKS = ("detect", "pose", "segment")
FORMS = ("raw", "end2end")
CROPS = ("coverage", "hard")

# ultralytics/cfg/default.yaml and utils/nms.py: predict's conf, NMS IoU, max_det and the
# cap on boxes entering NMS.
DEFAULT_CONF = 0.25
DEFAULT_IOU = 0.7
DEFAULT_MAX_DET = 300
MAX_NMS = 30000


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Stable on both tails: exp of a negative number only.
    out = np.empty_like(x)
    positive = x >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-x[positive]))
    e = np.exp(x[~positive])
    out[~positive] = e / (1.0 + e)
    return out


def _coverage(low: np.ndarray, high: np.ndarray, cells: int) -> np.ndarray:
    """(R, cells): the fraction of each unit cell [c, c+1) that [low, high) covers."""
    edges = np.arange(cells, dtype=np.float64)
    return np.clip(np.minimum(edges[None, :] + 1.0, high[:, None]) - np.maximum(edges[None, :], low[:, None]), 0.0, 1.0)


def crop_masks(masks: np.ndarray, boxes: np.ndarray, mode: str = "coverage") -> np.ndarray:
    """Zero each mask (R, h, w) outside its box (R, 4), xyxy in mask pixels.

    hard: ultralytics.utils.ops.crop_mask, column c kept when x1 <= c < x2 (row alike).
    coverage: each column weighted by the fraction of [c, c+1) inside [x1, x2) (row alike).
    """
    if mode not in CROPS:
        raise ValueError(f"crop mode {mode!r} not in {CROPS}")
    if len(masks) == 0:
        return masks
    _, h, w = masks.shape
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    if mode == "hard":
        columns, rows = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
        keep_x = (columns[None, :] >= x1[:, None]) & (columns[None, :] < x2[:, None])
        keep_y = (rows[None, :] >= y1[:, None]) & (rows[None, :] < y2[:, None])
        return masks * keep_y[:, :, None] * keep_x[:, None, :]
    return masks * _coverage(y1, y2, h)[:, :, None] * _coverage(x1, x2, w)[:, None, :]


def _tensors(value) -> list:
    """Every tensor of a nested tuple/list, in order."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    raise ModelCaseError(f"UltralyticsYOLO: unexpected {type(value).__name__} in the module's result")


class UltralyticsYOLO(Adapter):
    """Ultralytics YOLO detect / pose / segment outputs, raw head or end-to-end form.

    task: "detect", "pose" or "segment".
    form: "raw" (output0 (B, 4+nc+E, N), NMS here) or "end2end" ((B, max_det, 6+E)).
    num_classes: nc; for the raw form inferred from output0's channels when omitted
        (and checked when given).
    kpt_shape: (K, 3) keypoints x y visibility, or (K, 2) without visibility (read as
        score 1); pose only.
    num_masks: prototype channels (32); segment only.
    score_threshold: Ultralytics' conf: an instance needs score > it. The comparator
        takes it as the decision boundary (an instance within its ambiguity margin may
        appear on one side only).
    iou_threshold, max_det, agnostic: as Ultralytics' iou, max_det and agnostic_nms.
    crop: "coverage" (default) or "hard" (Ultralytics' crop_mask); see the module doc.
    output / proto: the output names (Ultralytics' ONNX export: output0, output1).
    """

    def __init__(self, task: str = "detect", *, form: str = "raw", num_classes: Optional[int] = None,
                 kpt_shape=(17, 3), num_masks: int = 32, score_threshold: float = DEFAULT_CONF,
                 iou_threshold: float = DEFAULT_IOU, max_det: int = DEFAULT_MAX_DET, agnostic: bool = False,
                 crop: str = "coverage", output: str = "output0", proto: str = "output1"):
        if task not in TASKS:
            raise ModelCaseError(f"UltralyticsYOLO: task {task!r} not in {TASKS}")
        if form not in FORMS:
            raise ModelCaseError(f"UltralyticsYOLO: form {form!r} not in {FORMS}")
        if crop not in CROPS:
            raise ModelCaseError(f"UltralyticsYOLO: crop {crop!r} not in {CROPS}")
        kpt_shape = tuple(int(v) for v in kpt_shape)
        if task == "pose" and (len(kpt_shape) != 2 or kpt_shape[0] < 1 or kpt_shape[1] not in (2, 3)):
            raise ModelCaseError(f"UltralyticsYOLO: kpt_shape must be (K, 2) or (K, 3), got {kpt_shape}")
        if not 0.0 <= score_threshold <= 1.0 or not 0.0 <= iou_threshold <= 1.0:
            raise ModelCaseError("UltralyticsYOLO: score_threshold and iou_threshold lie in [0, 1], got "
                                 f"{score_threshold}, {iou_threshold}")
        if max_det < 1:
            raise ModelCaseError(f"UltralyticsYOLO: max_det must be >= 1, got {max_det}")
        self.task, self.form, self.num_classes = task, form, num_classes
        self.kpt_shape = kpt_shape if task == "pose" else None
        self.num_masks = num_masks if task == "segment" else 0
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        # The NMS IoU threshold as the comparator reads it (case.nms_iou_threshold): a box
        # on one side only, overlapping a same-class box of the other side at this IoU,
        # was kept or suppressed by rounding.
        self.nms_iou_threshold = self.iou_threshold
        self.max_det = int(max_det)
        # A side that kept exactly max_det had to cut: its lowest score is a boundary.
        self.topk = self.max_det
        self.agnostic = agnostic
        self.crop = crop
        self.output, self.proto = output, proto
        layout = ("(B, 4 + nc + E, N) cx cy w h, class scores, task channels" if form == "raw"
                  else "(B, max_det, 6 + E) x1 y1 x2 y2 score class, task channels")
        outputs = [OutputSpec(output, "boxes", f"Ultralytics {task} {form}: {layout}")]
        if task == "segment":
            outputs.append(OutputSpec(proto, "masks", f"({num_masks}, H/4, W/4) mask prototypes"))
        self.outputs = tuple(outputs)

    @property
    def extra_channels(self) -> int:
        if self.task == "pose":
            return self.kpt_shape[0] * self.kpt_shape[1]
        return self.num_masks

    # ------------------------------------------------------------------ torch results

    def named_outputs(self, result) -> dict:
        """The module's result as {output0[, output1]}: unwraps eval mode's (y, raw
        prediction dict) and segment's ((y, proto), dict); export mode's y / (y, proto)
        and NMSModel's tensor / (tensor, proto) are already flat."""
        if isinstance(result, Mapping):
            return super().named_outputs(result)
        if isinstance(result, (tuple, list)) and len(result) == 2 and isinstance(result[1], Mapping):
            result = result[0]  # eval mode: (inference output, raw head predictions for the loss)
        tensors = _tensors(result)
        names = self.output_names
        if len(tensors) != len(names):
            raise ModelCaseError(
                f"UltralyticsYOLO({self.task!r}): the module returned {len(tensors)} tensor(s) "
                f"{[tuple(t.shape) for t in tensors]}, the {self.task} format has {len(names)} ({names}); "
                "is the task right?")
        return dict(zip(names, tensors))

    # ------------------------------------------------------------------ one image

    def to_instances(self, outputs, index, image_size) -> Instances:
        if self.form == "raw":
            return self._raw_instances(outputs, index, image_size)
        return self._end2end_instances(outputs, index, image_size)

    def _check_classes(self, nc: int, where: str) -> None:
        if nc < 1 or (self.num_classes is not None and nc != self.num_classes):
            expected = self.num_classes if self.num_classes is not None else ">= 1"
            raise ModelCaseError(f"UltralyticsYOLO({self.task!r}): {where} leaves {nc} class channels, expected "
                                 f"{expected}")

    def _raw_instances(self, outputs, index, image_size) -> Instances:
        pred = np.asarray(outputs[self.output][index], dtype=np.float64)
        if pred.ndim != 2:
            raise ModelCaseError(f"UltralyticsYOLO raw: {self.output} sample has shape {pred.shape}, expected "
                                 "(4 + nc + E, anchors)")
        nc = pred.shape[0] - 4 - self.extra_channels
        self._check_classes(nc, f"{self.output} with {pred.shape[0]} channels")
        proto = self._proto(outputs, index)
        class_scores = pred[4 : 4 + nc]
        # Best class only (predict's multi_label=False); argmax keeps the first of equal scores.
        labels = class_scores.argmax(axis=0)
        scores = class_scores[labels, np.arange(pred.shape[1])]
        candidates = np.flatnonzero(scores > self.score_threshold)
        if len(candidates) > MAX_NMS:
            order = np.lexsort((candidates, -scores[candidates]))
            candidates = np.sort(candidates[order[:MAX_NMS]])
        cx, cy, w, h = pred[0:4, candidates]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        result = nms(boxes, scores[candidates], self.iou_threshold,
                     labels=None if self.agnostic else labels[candidates], max_det=self.max_det)
        kept = candidates[result.keep]
        extras = pred[4 + nc :, kept].T  # (R, E)
        return self._instances(boxes[result.keep], scores[kept], labels[kept], extras, proto, image_size,
                               {"nms_suppressed": result.suppressed})

    def _end2end_instances(self, outputs, index, image_size) -> Instances:
        det = np.asarray(outputs[self.output][index], dtype=np.float64)
        if det.ndim != 2 or det.shape[1] != 6 + self.extra_channels:
            raise ModelCaseError(f"UltralyticsYOLO end2end: {self.output} sample has shape {det.shape}, expected "
                                 f"(max_det, {6 + self.extra_channels})")
        proto = self._proto(outputs, index)
        rows = np.flatnonzero(det[:, 4] > self.score_threshold)[: self.max_det]
        labels = np.rint(det[rows, 5]).astype(np.int64)
        if self.num_classes is not None and len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ModelCaseError(f"UltralyticsYOLO end2end: class index {labels.max()} outside "
                                 f"0..{self.num_classes - 1}")
        return self._instances(det[rows, :4], det[rows, 4], labels, det[rows, 6:], proto, image_size, {})

    def _proto(self, outputs, index):
        if self.task != "segment":
            return None
        proto = np.asarray(outputs[self.proto][index], dtype=np.float64)
        if proto.ndim != 3 or proto.shape[0] != self.num_masks:
            raise ModelCaseError(f"UltralyticsYOLO segment: {self.proto} sample has shape {proto.shape}, expected "
                                 f"({self.num_masks}, H/4, W/4)")
        return proto

    def _instances(self, boxes, scores, labels, extras, proto, image_size, extra) -> Instances:
        keypoints = masks = None
        if self.task == "pose":
            k, dims = self.kpt_shape
            keypoints = extras.reshape(-1, k, dims)
            if dims == 2:  # no visibility channel: every keypoint scores 1
                keypoints = np.concatenate([keypoints, np.ones_like(keypoints[..., :1])], axis=-1)
        elif self.task == "segment":
            masks = self.masks(extras, proto, boxes, image_size)
        return Instances(boxes=boxes, scores=scores, labels=labels, keypoints=keypoints, masks=masks,
                         image_size=tuple(image_size) if image_size is not None else None, extra=extra)

    def masks(self, coefficients, proto, boxes, image_size) -> np.ndarray:
        """(R, h, w) soft masks at prototype resolution: sigmoid(coefficients @ prototypes),
        cropped to each box scaled from the input image to the prototype grid."""
        c, mh, mw = proto.shape
        coefficients = np.asarray(coefficients, dtype=np.float64).reshape(-1, c)
        logits = (coefficients @ proto.reshape(c, -1)).reshape(-1, mh, mw)
        height, width = image_size if image_size is not None else (mh * 4, mw * 4)
        scale = np.array([mw / width, mh / height, mw / width, mh / height])
        return crop_masks(_sigmoid(logits), np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale, self.crop)
