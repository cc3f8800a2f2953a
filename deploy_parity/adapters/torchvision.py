"""torchvision's detection models: Faster/Mask/Keypoint R-CNN, FCOS, RetinaNet, SSD.

In eval mode a torchvision detector returns a list with one dict per image, in the
input image's pixels (its transform's resize is undone by its own postprocess):

  boxes            (R, 4) float  x1 y1 x2 y2
  labels           (R,)   int64  class index (0 is background and never returned)
  scores           (R,)   float  the score the model thresholds (box_score_thresh /
                                 score_thresh) and keeps the top detections_per_img of
  keypoints        (R, K, 3)     Keypoint R-CNN: x, y, visibility (always 1)
  keypoints_scores (R, K)        Keypoint R-CNN: the heatmap logit at each keypoint
                                 (unbounded; judged with absolute + relative limits)
  masks            (R, 1, H, W)  Mask R-CNN: soft masks in [0, 1], pasted into the image

The R-CNNs emit boxes, labels, scores (then masks or keypoints, keypoints_scores);
FCOS, RetinaNet and SSD emit boxes, scores, labels. That dict order is the order of
the flat outputs of a graph exported from the model (torch.onnx.export(model, ...)
flattens the dict), and the order this adapter exports and reads flat tuples in.

torchvision detection exports take one image: the list holds one dict, its arrays carry
no batch axis, and a case using this adapter declares max_batch=1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np

from deploy_parity.adapters.base import Adapter
from deploy_parity.case import OutputSpec
from deploy_parity.compare.instances import Instances
from deploy_parity.errors import ModelCaseError

# The two dict orders torchvision's detectors use.
ORDERS = {
    "rcnn": ("boxes", "labels", "scores"),  # FasterRCNN, MaskRCNN, KeypointRCNN
    "single-stage": ("boxes", "scores", "labels"),  # FCOS, RetinaNet, SSD, SSDlite
}

DESCRIPTIONS = {
    "boxes": ("boxes", "(R, 4) x1 y1 x2 y2 in input pixels"),
    "labels": ("labels", "(R,) class index"),
    "scores": ("scores", "(R,) detection score"),
    "masks": ("masks", "(R, 1, H, W) soft masks in [0, 1], pasted into the image"),
    "keypoints": ("keypoints", "(R, K, 3) x y visibility"),
    "keypoints_scores": ("keypoints", "(R, K) heatmap logit of each keypoint"),
}


class TorchvisionDetection(Adapter):
    """A torchvision detector's outputs (one image: torchvision exports take batch 1).

    order: "rcnn" (Faster/Mask/Keypoint R-CNN: boxes, labels, scores) or
        "single-stage" (FCOS, RetinaNet, SSD: boxes, scores, labels).
    masks / keypoints: the model is a Mask R-CNN / Keypoint R-CNN.
    score_threshold: the model's own cut (R-CNN box_score_thresh, FCOS/RetinaNet/SSD
        score_thresh); topk: its detections_per_img. `for_model(model)` reads all of
        it from a built model.
    keypoint_peak_gap: the name of an extra (R, K) output, when a wrapper adds one: how
        far each keypoint's best heatmap cell beats the second best in the model's own
        decoding, so the comparator reads an argmax jump between two near-equal cells as
        a tie (ambiguous), not an error. torchvision's outputs do not carry it.
    Soft masks are judged at 0.5, where torchvision's own references threshold them.
    """

    def __init__(self, *, order: str = "rcnn", masks: bool = False, keypoints: bool = False,
                 score_threshold: Optional[float] = None, topk: Optional[int] = None,
                 keypoint_peak_gap: Optional[str] = None):
        if order not in ORDERS:
            raise ModelCaseError(f"TorchvisionDetection: order {order!r} not in {sorted(ORDERS)}")
        if (masks or keypoints) and order != "rcnn":
            raise ModelCaseError("TorchvisionDetection: masks and keypoints come from the R-CNNs (order='rcnn')")
        if keypoint_peak_gap and not keypoints:
            raise ModelCaseError("TorchvisionDetection: keypoint_peak_gap belongs to keypoints (keypoints=True)")
        names = list(ORDERS[order])
        if masks:
            names.append("masks")
        if keypoints:
            names += ["keypoints", "keypoints_scores"]
        self.order = order
        self.has_masks = masks
        self.has_keypoints = keypoints
        self.peak_gap_name = keypoint_peak_gap
        outputs = [OutputSpec(name, *DESCRIPTIONS[name]) for name in names]
        if keypoint_peak_gap:
            outputs.append(OutputSpec(keypoint_peak_gap, "keypoints", "(R, K) best minus second-best heatmap cell"))
        self.outputs = tuple(outputs)
        self.score_threshold = score_threshold
        self.topk = topk

    @classmethod
    def for_model(cls, model) -> "TorchvisionDetection":
        """The adapter for a torchvision detector: its kind, whether it has mask or keypoint
        heads, its score threshold and detections per image. `model` is the detector or,
        better, the case's build function: it is then called on PyTorch's meta device (the
        architecture and its settings, no weights made), so a cases module that lists a
        ResNet-50 detector imports in a blink instead of building it."""
        import torch

        if callable(model) and not isinstance(model, torch.nn.Module):
            build = model
            try:
                with torch.device("meta"):
                    model = build()
            except Exception:  # noqa: BLE001 - a build the meta device cannot run: built for real, once
                model = build()
        heads = getattr(model, "roi_heads", None)
        if heads is not None:  # GeneralizedRCNN: Faster / Mask / Keypoint R-CNN
            return cls(order="rcnn", masks=heads.has_mask(), keypoints=heads.has_keypoint(),
                       score_threshold=float(heads.score_thresh), topk=int(heads.detections_per_img))
        if hasattr(model, "score_thresh") and hasattr(model, "detections_per_img"):  # FCOS, RetinaNet, SSD
            return cls(order="single-stage", score_threshold=float(model.score_thresh),
                       topk=int(model.detections_per_img))
        raise ModelCaseError(f"TorchvisionDetection.for_model: {type(model).__name__} is not a torchvision "
                             "detector (no roi_heads, no score_thresh / detections_per_img)")

    def named_outputs(self, result) -> dict:
        """{name: tensor} from what a torchvision detector or its export gives back:

        * the eager result, a list with one dict per image (batch 1 only);
        * a scripted model's (losses, detections) pair;
        * one image's dict;
        * flat outputs (a tuple or list of tensors) in torchvision's dict order, then
          keypoint_peak_gap when declared: a deploy module returning a tuple, or an
          exported graph's outputs read by position.
        """
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], Mapping) \
                and isinstance(result[1], (list, tuple)):
            result = result[1]  # torch.jit.script: (losses, detections)
        if isinstance(result, (list, tuple)) and result and isinstance(result[0], Mapping):
            if len(result) != 1:
                raise ModelCaseError(f"TorchvisionDetection: the model returned detections for {len(result)} "
                                     "images; torchvision detection exports take one image (declare max_batch=1)")
            result = result[0]
        if isinstance(result, Mapping):
            missing = [n for n in self.output_names if n not in result]
            if missing:
                raise ModelCaseError(f"TorchvisionDetection: the model's detections have no {missing} (they have "
                                     f"{sorted(result)}); is this the right kind of model (masks={self.has_masks}, "
                                     f"keypoints={self.has_keypoints}, order={self.order!r})?")
            return {n: result[n] for n in self.output_names}
        if isinstance(result, Sequence):
            result = tuple(result)
            if len(result) != len(self.output_names):
                raise ModelCaseError(f"TorchvisionDetection: {len(result)} flat outputs, the format has "
                                     f"{len(self.output_names)} ({', '.join(self.output_names)})")
            return dict(zip(self.output_names, result))
        raise ModelCaseError(f"TorchvisionDetection: cannot read a {type(result).__name__} as detections")

    def to_instances(self, outputs, index, image_size) -> Instances:
        """One image's detections. torchvision's outputs have no batch axis: they are the
        one image's instances, so index must be 0."""
        if index != 0:
            raise ModelCaseError(f"TorchvisionDetection: sample {index} asked for, but torchvision's outputs hold "
                                 "one image (no batch axis); declare max_batch=1")
        keypoints = masks = gap = None
        if self.peak_gap_name:
            gap = outputs[self.peak_gap_name]
        if self.has_keypoints:
            xy = np.asarray(outputs["keypoints"])[..., :2]
            scores = np.asarray(outputs["keypoints_scores"])
            keypoints = np.concatenate([xy, scores[..., None].astype(xy.dtype)], axis=-1)
        if self.has_masks:
            masks = np.asarray(outputs["masks"])
            if masks.ndim == 4:
                if masks.shape[1] != 1:
                    raise ModelCaseError(f"TorchvisionDetection: masks of shape {masks.shape}; expected (R, 1, H, W)")
                masks = masks[:, 0]
        return Instances(boxes=outputs["boxes"], scores=outputs["scores"], labels=outputs["labels"],
                         keypoints=keypoints, masks=masks, keypoint_peak_gap=gap, image_size=image_size)
