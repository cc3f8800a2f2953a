"""The MMDeploy output layout (RTMO, RTMDet, RT-DETR style deploy graphs).

dets (B, K, 5) = x1, y1, x2, y2, score in input pixels; optionally labels (B, K) and
keypoints (B, K, J, 3) = x, y, score. K is fixed (top-k) or dynamic; rows are one
image's instances, compared by box matching, never by position.
"""

from __future__ import annotations

from typing import Optional

from deploy_parity.adapters.base import Adapter
from deploy_parity.case import OutputSpec
from deploy_parity.compare.instances import Instances


class MMDeployDetections(Adapter):
    """dets (B, K, 5) [+ labels (B, K)] [+ keypoints (B, K, J, 3)]."""

    def __init__(self, *, dets: str = "dets", labels: Optional[str] = None, keypoints: Optional[str] = None,
                 score_threshold: Optional[float] = None, topk: Optional[int] = None):
        self.names = {"dets": dets, "labels": labels, "keypoints": keypoints}
        outputs = [OutputSpec(dets, "boxes", "(B, K, 5) x1 y1 x2 y2 score")]
        if labels:
            outputs.append(OutputSpec(labels, "labels", "(B, K) class index"))
        if keypoints:
            outputs.append(OutputSpec(keypoints, "keypoints", "(B, K, J, 3) x y score"))
        self.outputs = tuple(outputs)
        self.score_threshold = score_threshold
        self.topk = topk

    def to_instances(self, outputs, index, image_size) -> Instances:
        dets = outputs[self.names["dets"]][index]
        labels = outputs[self.names["labels"]][index] if self.names["labels"] else None
        keypoints = outputs[self.names["keypoints"]][index] if self.names["keypoints"] else None
        return Instances(boxes=dets[:, :4], scores=dets[:, 4], labels=labels, keypoints=keypoints,
                         image_size=image_size)
