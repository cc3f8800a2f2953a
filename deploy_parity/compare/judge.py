"""One judge per (case, backend, precision): every setting a comparison is judged by.

The adapter's defaults, the case's `Judging`, the tolerance table's rows, the case's
overrides and the noise factor are read here once; every check (parity, batch,
determinism, the coverage probe) asks the judge instead of passing loose values around.
A new judging setting touches this file and the comparator that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from .noise import NoiseFloor
from .tolerances import ResolvedTolerance, lookup


@dataclass
class Judge:
    backend: str
    precision: str
    model: str = ""
    overrides: Mapping = field(default_factory=dict)
    score_threshold: Optional[float] = None
    topk: Optional[int] = None
    nms_iou_threshold: Optional[float] = None
    sigmas: object = None
    index_wise_keypoints: bool = False
    visibility_threshold: Optional[float] = None
    # Set once the case's to_instances was seen reading every declared output (the
    # unread-output rule runs on the first comparison only).
    outputs_checked: bool = False
    _rows: dict = field(default_factory=dict, repr=False)

    @classmethod
    def for_case(cls, case, backend: str, precision: str) -> "Judge":
        return cls(backend=backend, precision=precision, model=case.name, overrides=case.tolerance_overrides,
                   score_threshold=case.score_threshold, topk=case.topk, nms_iou_threshold=case.nms_iou_threshold,
                   sigmas=case.keypoint_sigmas, index_wise_keypoints=case.index_wise_keypoints,
                   visibility_threshold=case.judging.keypoint_visibility_threshold)

    def row(self, kind: str) -> ResolvedTolerance:
        """The table row (with the case's overrides) for `kind`, looked up once."""
        if kind not in self._rows:
            self._rows[kind] = lookup(kind, self.backend, self.precision, self.overrides, self.model)
        return self._rows[kind]

    def tolerance(self, kind: str, noise: Optional[NoiseFloor] = None) -> ResolvedTolerance:
        """The limits of one comparison: the row, widened by this example's noise floor."""
        row = self.row(kind)
        return row if noise is None else noise.widen(row)

    @property
    def noise_factor(self) -> float:
        return float(self.row("noise")["factor"])
