"""Verdicts and comparison results shared by every comparator."""

from __future__ import annotations

import contextlib
import contextvars
import enum
import math
from dataclasses import dataclass, field
from typing import Any


class Verdict(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    # The reference itself sits on a decision boundary (two near-equal peaks, a score at
    # the threshold): a difference there is not evidence of a bug. Counted, and a suite
    # fails when too many cases are ambiguous, so a model cannot hide behind it.
    AMBIGUOUS = "ambiguous"
    # Nothing to compare (the reference found no instances): never counted as a pass.
    VACUOUS = "vacuous"
    # The artifact cannot take this input (size outside its accepted shapes): refused
    # with a clear message, neither a parity failure nor a pass.
    REFUSED = "refused"
    # The check ran past the per-case time limit (--case-timeout): a hung or runaway
    # inference, interrupted and recorded with its case. Never a pass.
    TIMEOUT = "timeout"
    # The check itself raised (a backend error, a reader that crashed, a contract the
    # artifact breaks mid-run): recorded with the exception, never a pass and never lost.
    ERROR = "error"


# The metrics in Comparison.metrics that measure how wrong a candidate is (all grow with
# the error), and what a reader calls them. The property runner steers the search by
# them; the report writers summarise, trend and plot them.
ERROR_METRICS = {
    "max_px": "worst keypoint error (px)",
    "max_corner_px": "worst box corner error (px)",
    "max_abs": "worst raw tensor error (abs)",
}


# Combining verdicts of several outputs of one case: the worst wins in this order.
SEVERITY = {Verdict.ERROR: 6, Verdict.TIMEOUT: 5, Verdict.FAIL: 4, Verdict.REFUSED: 3, Verdict.AMBIGUOUS: 2,
            Verdict.VACUOUS: 1, Verdict.PASS: 0}
_SEVERITY = SEVERITY

# What the two answers a comparator judges are called in its messages. A parity check
# compares the eager reference with a backend's candidate; the batch check compares an
# image run alone with the same image inside its batch, the determinism check two runs:
# their messages must say so, not "reference" and "candidate".
_SIDES = contextvars.ContextVar("deploy_parity_sides", default=("reference", "candidate"))


def side_name(role: str) -> str:
    """The name, in messages, of the "reference" or "candidate" side being compared now."""
    ref, cand = _SIDES.get()
    return ref if role == "reference" else cand


@contextlib.contextmanager
def side_names(reference: str, candidate: str):
    """Within this block comparators call the two sides `reference` and `candidate`."""
    token = _SIDES.set((reference, candidate))
    try:
        yield
    finally:
        _SIDES.reset(token)


def combine(verdicts) -> Verdict:
    """Worst verdict of several comparisons. A mix of PASS and VACUOUS is PASS only if
    at least one comparison passed; all VACUOUS stays VACUOUS."""
    verdicts = list(verdicts)
    if not verdicts:
        return Verdict.VACUOUS
    worst = max(verdicts, key=lambda v: _SEVERITY[v])
    if worst == Verdict.VACUOUS and Verdict.PASS in verdicts:
        return Verdict.PASS
    return worst


def beyond(value: float, limit: float, unit: str = "") -> str:
    """"value > limit" with enough significant digits that the two printed numbers differ
    (0.0104 > 0.01, never 0.0 > 0.01)."""
    for digits in range(3, 10):
        a, b = f"{value:.{digits}g}", f"{limit:.{digits}g}"
        if a != b:
            break
    return f"{a}{unit} > {b}{unit}"


def noise_record(tol) -> dict:
    """The noise floor a ResolvedTolerance was widened by, as a Comparison records it."""
    noise = {name: dict(entry) for name, entry in getattr(tol, "noise", {}).items()}
    note = getattr(tol, "noise_note", "")
    return {**noise, "note": note} if (noise or note) else {}


@dataclass
class Comparison:
    """The judgement of one output (or one structured view: boxes, keypoints, masks)."""

    kind: str  # "tensor", "boxes", "keypoints", "masks", ...
    output: str  # output name (or a label such as "sample 1 / boxes")
    verdict: Verdict
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""
    tolerance: dict[str, Any] = field(default_factory=dict)
    tolerance_source: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    # The model's own rounding behind the limits (ResolvedTolerance.noise): field ->
    # {noise, factor, floor, limit, how}, and "note": how it was measured or why not.
    noise: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def judged(cls, kind, output, tol, verdict, metrics, message, evidence=None) -> "Comparison":
        """A comparison judged against a ResolvedTolerance, which it records with its source."""
        return cls(kind=kind, output=output, verdict=verdict, metrics=metrics, message=message,
                   tolerance=dict(tol.values), tolerance_source=tol.source, evidence=evidence or {},
                   noise=noise_record(tol))

    @property
    def failed(self) -> bool:
        return self.verdict == Verdict.FAIL

    def to_record(self) -> dict:
        """JSON-safe dict (NaN and inf written as strings so JSON stays valid)."""

        def clean(v):
            if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
                return str(v)
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
                return clean(v.item())
            return v

        return {
            "kind": self.kind,
            "output": self.output,
            "verdict": self.verdict.value,
            "metrics": clean(self.metrics),
            "message": self.message,
            "tolerance": clean(self.tolerance),
            "tolerance_source": self.tolerance_source,
            "evidence": clean(self.evidence),
            **({"noise": clean(self.noise)} if self.noise else {}),
        }
