"""Metric regressions against the last complete run, flagged even while tolerances pass.

A tolerance says when an answer is wrong; a trend says when it is getting worse. A
worst error that doubles from one night to the next (a new ONNX Runtime kernel, a
TensorRT tactic, an exporter change) is worth a look long before it reaches the
tolerance. The floors keep noise out: fp32 errors of 1e-6 px doubling to 2e-6 px are
rounding, not news.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from reports.metrics import ERROR_METRICS

# Flag when current worst > REGRESSION_FACTOR x baseline worst AND it grew by more
# than the metric's floor.
REGRESSION_FACTOR = 2.0
ABSOLUTE_FLOORS = {
    # A twentieth of a pixel: ten times below the fp32 keypoint/box tolerance (0.5 px),
    # far above fp32 rounding on these image sizes (1e-4 px).
    "max_px": 0.05,
    "max_corner_px": 0.05,
    # Raw tensors (scores, logits in [0, 1] or O(1)): well above fp32 rounding (1e-6).
    "max_abs": 1e-4,
}


@dataclass(frozen=True)
class Regression:
    model: str
    backend: str
    precision: str
    check: str
    metric: str
    baseline: float
    current: float
    baseline_run_id: int
    replay: str  # the command that re-runs the case holding the current worst

    @property
    def growth(self) -> Optional[float]:
        return self.current / self.baseline if self.baseline else None

    def describe(self) -> str:
        growth = f"x{self.growth:.3g}" if self.growth else "from exactly 0"
        return (f"{self.model} {self.backend} ({self.precision}) {self.check}: {ERROR_METRICS[self.metric]} "
                f"{self.baseline:.3g} -> {self.current:.3g} ({growth}, baseline run #{self.baseline_run_id})")

    def as_dict(self) -> dict:
        return {**self.__dict__, "growth": self.growth, "description": self.describe()}


def is_regression(metric: str, baseline: Optional[float], current: Optional[float]) -> bool:
    if baseline is None or current is None:
        return False
    return current > REGRESSION_FACTOR * baseline and current - baseline > ABSOLUTE_FLOORS[metric]


def find_regressions(current: dict, baselines: dict) -> list:
    """current: {group: {metric: (worst, record)}} (history.worst_by_group);
    baselines: {group: (run id, {metric: worst})} (HistoryStore.baselines)."""
    found = []
    for group, metrics in sorted(current.items()):
        if group not in baselines:
            continue
        run_id, before = baselines[group]
        for metric, (value, record) in metrics.items():
            if is_regression(metric, before.get(metric), value):
                found.append(Regression(*group, metric=metric, baseline=before[metric], current=value,
                                        baseline_run_id=run_id, replay=(record or {}).get("replay", "")))
    return found


def describe_rule() -> str:
    floors = ", ".join(f"{ERROR_METRICS[m]} {v:g}" for m, v in ABSOLUTE_FLOORS.items())
    return (f"flagged when a group's worst error grew more than {REGRESSION_FACTOR:g}x over the last complete "
            f"run with the same Hypothesis profile and by more than a floor ({floors})")
