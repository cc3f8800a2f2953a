"""Systematic shift: the mean signed error of every matched point, in x and in y.

Per-point limits catch a point that is far off; they cannot catch every point being a
little off the same way. A half-pixel convention error (+0.5 px on every x) stays under
a 0.5-px limit and moves a 200-px box's IoU by only 0.005, yet it is a real bug that a
user's downstream code sees on every detection. Rounding errors scatter around zero, so
their mean shrinks with the number of points; a bug's does not. The check fails when the
mean exceeds both the row's floor (shift_px) and z standard errors of itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .boxes import Matching
from .instances import Instances
from .tolerances import ResolvedTolerance
from .verdict import Comparison, Verdict, side_name

# Fewer points than this in an axis say nothing about a mean.
MIN_POINTS = 3


@dataclass
class PointDeltas:
    """Signed errors (candidate - reference, px) of matched points, collected over the
    images of one example, with the floors of the rows they came from."""

    x: list = field(default_factory=list)
    y: list = field(default_factory=list)
    floors: dict = field(default_factory=dict)  # kind -> shift_px
    sources: dict = field(default_factory=dict)  # kind -> number of points (x)
    notes: dict = field(default_factory=dict)  # kind -> why its floor is what it is (noise floor)

    def add(self, kind: str, dx, dy, floor: float, note: str = "") -> None:
        dx = np.asarray(dx, dtype=np.float64).reshape(-1)
        dy = np.asarray(dy, dtype=np.float64).reshape(-1)
        finite = np.isfinite(dx) & np.isfinite(dy)  # non-finite points already fail elsewhere
        if not finite.any():
            return
        self.x.append(dx[finite])
        self.y.append(dy[finite])
        self.floors[kind] = float(floor)
        self.notes[kind] = note
        self.sources[kind] = self.sources.get(kind, 0) + int(finite.sum())

    def add_boxes(self, ref: Instances, cand: Instances, matching: Matching, tol: ResolvedTolerance) -> None:
        r, c = matching.judged_pairs()
        if len(r) == 0 or "shift_px" not in tol.values:
            return
        delta = cand.boxes[c] - ref.boxes[r]  # x1 y1 x2 y2
        self.add("box corners", delta[:, [0, 2]], delta[:, [1, 3]], tol["shift_px"], tol.explain("shift_px", " px"))

    def add_keypoints(self, ref: Instances, cand: Instances, ref_idx, cand_idx, tol: ResolvedTolerance,
                      judged=None) -> None:
        if len(ref_idx) == 0 or "shift_px" not in tol.values:
            return
        delta = np.asarray(cand.keypoints, dtype=np.float64)[cand_idx, :, :2] - \
            np.asarray(ref.keypoints, dtype=np.float64)[ref_idx, :, :2]
        if judged is not None:
            delta = delta[judged]
        self.add("keypoints", delta[..., 0], delta[..., 1], tol["shift_px"], tol.explain("shift_px", " px"))


def compare_systematic_shift(deltas: PointDeltas, tol: ResolvedTolerance, output: str = "shift") -> Optional[Comparison]:
    """One comparison for the whole example; None when no point was matched.

    tol: the "shift" row (its z); the floor is the smallest shift_px of the rows the
    points came from, which the noise floor may have widened."""
    if not deltas.x:
        return None
    floor_kind = min(deltas.floors, key=deltas.floors.get)
    floor = deltas.floors[floor_kind]
    why_floor = deltas.notes.get(floor_kind, "")
    z = float(tol["z"])
    values = {**dict(tol.values), "shift_px": floor}
    points = ", ".join(f"{n} {kind}" for kind, n in deltas.sources.items())
    metrics, findings = {}, []
    for axis, chunks in (("x", deltas.x), ("y", deltas.y)):
        d = np.concatenate(chunks)
        n = len(d)
        mean = float(d.mean())
        spread = float(d.std(ddof=1)) if n > 1 else 0.0
        standard_error = spread / np.sqrt(n) if n > 1 else np.inf
        metrics[f"shift_{axis}_px"] = mean
        metrics[f"shift_{axis}_spread_px"] = spread
        metrics[f"shift_{axis}_points"] = n
        if n >= MIN_POINTS and abs(mean) > floor and abs(mean) > z * standard_error:
            findings.append(
                f"systematic shift {mean:+.2f} px in {axis} over {n} points (mean of {side_name('candidate')} - {side_name('reference')}; "
                f"spread {spread:.2g} px, so {abs(mean) / max(standard_error, 1e-300):.3g} standard errors; "
                f"floor {floor:.3g} px{why_floor})"
            )
    result = Comparison(kind="shift", output=output, verdict=Verdict.PASS, metrics=metrics,
                        tolerance=values, tolerance_source=f"{tol.source}; shift_px from the boxes/keypoints rows")
    if findings:
        result.verdict = Verdict.FAIL
        result.message = ("; ".join(findings) + f" ({points}): every point moves the same way, as a half-pixel "
                          "convention, a resize scale or a swapped axis does, even where each stays within its "
                          "own per-point limit")
    else:
        result.message = (f"mean signed error x {metrics['shift_x_px']:+.2g} px, y {metrics['shift_y_px']:+.2g} px "
                          f"over {points}: no consistent shift beyond {floor:g} px")
    return result
