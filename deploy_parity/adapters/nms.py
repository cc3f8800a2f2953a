"""Non-maximum suppression with deterministic tie-breaking, and the evidence of its ties.

Decoders that run NMS inside the harness (raw detection heads) use this one, on the
reference and the candidate alike. Two things differ from a plain NMS:

- Ties are broken by position (equal scores: the lower index wins), so the same input
  always keeps the same boxes, whatever the sort's stability.
- It records which boxes each kept box suppressed and their scores. When a kept box
  beat a competitor whose score ties with its own (within the comparator's ambiguity
  margin), which of the two survives is arbitrary: a backend whose rounding keeps the
  other one is not wrong. The box comparator reads that record from
  `Instances.extra["nms_suppressed"]` and calls such a difference AMBIGUOUS, with the
  tie as evidence, instead of a 96-px corner error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deploy_parity.compare.boxes import box_iou


@dataclass
class NmsResult:
    keep: np.ndarray  # indices into the input, best first
    suppressed: dict  # {"boxes": (S, 4), "scores": (S,), "by": (S,) position in `keep`}


def nms(boxes, scores, iou_threshold: float, labels=None, max_det: int | None = None) -> NmsResult:
    """Greedy NMS, best score first, ties by lower index; per label when labels are given.

    Suppression records only boxes that a kept box removed (not those cut by max_det).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(scores)
    order = np.lexsort((np.arange(n), -scores))  # score descending, then index ascending
    iou = box_iou(boxes, boxes)
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        iou = np.where(labels[:, None] == labels[None, :], iou, 0.0)
    alive = np.ones(n, dtype=bool)
    keep, suppressed_idx, suppressed_by = [], [], []
    for i in order.tolist():
        if not alive[i]:
            continue
        if max_det is not None and len(keep) >= max_det:
            break
        alive[i] = False
        position = len(keep)
        keep.append(i)
        victims = np.flatnonzero(alive & (iou[i] > iou_threshold))
        alive[victims] = False
        suppressed_idx += victims.tolist()
        suppressed_by += [position] * len(victims)
    suppressed_idx = np.asarray(suppressed_idx, dtype=np.intp)
    return NmsResult(
        keep=np.asarray(keep, dtype=np.intp),
        suppressed={
            "boxes": boxes[suppressed_idx],
            "scores": scores[suppressed_idx],
            "by": np.asarray(suppressed_by, dtype=np.intp),
        },
    )
