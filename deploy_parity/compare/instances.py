"""Structured per-image outputs: what users look at (boxes, keypoints, masks).

Every model case turns its raw output tensors into one `Instances` per image, so the
comparators never depend on a model's tensor layout and never compare instances by
position when position carries no meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class Instances:
    """Detections of one image. R instances; every array's first axis is R.

    boxes:      (R, 4) float, x1 y1 x2 y2 in input-image pixels.
    scores:     (R,) float, the score the model ranks and thresholds by.
    labels:     (R,) int, or None for single-class models.
    keypoints:  (R, K, 3) float, x y score in pixels, or None.
    masks:      (R, M, M) per-ROI soft masks or (R, H, W) pasted masks, or None.
    keypoint_peak_gap: (R, K) float, how far the best heatmap cell beats the second
                best in the reference's own decoding (None when the model does not
                decode heatmaps). A small gap means the reference itself is ambiguous.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: Optional[np.ndarray] = None
    keypoints: Optional[np.ndarray] = None
    masks: Optional[np.ndarray] = None
    keypoint_peak_gap: Optional[np.ndarray] = None
    image_size: Optional[tuple] = None  # (height, width) of the input image
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        # Plain lists become arrays so select() and the comparators can index them.
        for name in ("labels", "keypoints", "masks", "keypoint_peak_gap"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.asarray(value))
        n = len(self.boxes)
        if len(self.scores) != n:
            raise ValueError(f"Instances: {n} boxes but {len(self.scores)} scores")
        for name in ("labels", "keypoints", "masks", "keypoint_peak_gap"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"Instances: {n} boxes but {len(value)} {name}")

    def __len__(self) -> int:
        return len(self.boxes)

    def select(self, index) -> "Instances":
        """The subset at `index` (boolean mask or integer indices)."""

        def pick(a):
            return None if a is None else a[index]

        return Instances(
            boxes=self.boxes[index],
            scores=self.scores[index],
            labels=pick(self.labels),
            keypoints=pick(self.keypoints),
            masks=pick(self.masks),
            keypoint_peak_gap=pick(self.keypoint_peak_gap),
            image_size=self.image_size,
            extra=dict(self.extra),
        )
