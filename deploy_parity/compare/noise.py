"""The noise floor: how much the model's own rounding moves each compared quantity, on
the example at hand.

A fixed limit cannot fit a 2-MB model and a ResNet-50 at once: a correct float32 export
of a deep detector moves box corners by 0.02 px on rounding alone, where a tiny model
moves them by 6e-5 px. So the reference is run a second time on the same feed in a
*shadow* precision (float64 for the float32 rows: |ref32 - ref64| is the reference's
own float32 rounding; the reduced precisions' own emulation on the CPU for the fp16 and
autocast rows), and every comparison is judged against

    limit = max(table floor, factor x noise floor)

per quantity (box corners, box scores, keypoint positions and scores, soft masks, raw
tensors, the systematic shift), the factor and the floor both in the one tolerance
table (deploy_parity/compare/tolerances.py, kind "noise"). The noise floor of an example
is the largest difference over all of its samples and matched instances: a single
instance's rounding may by chance be tiny (the ratio of two rounding errors has a heavy
tail), the worst over many is a stable measure of the model's scale. Except for pairs
far beyond the example's typical one (factor x its median; the smaller of two): such a
numerically unstable instance widens only its own limits, and a difference on it within
them is a knife edge, AMBIGUOUS (a random head whose one box moves 16 px between float32
and float64 must not let a 5-px error on every other box pass).

Where the shadow cannot run (an op without a float64 kernel, a module that makes its
own float32 tensors), the table row applies alone and every record says so.

Knife edges: pairs the shadow matches at an IoU below KNIFE_EDGE_IOU, and instances it
does not match at all, are decisions the reference's rounding flipped (a proposal kept
or dropped, an NMS or top-k cut), not noise: they never widen a limit. They serve as
evidence instead (deploy_parity/compare/structured.py): a candidate that fails against
the float32 reference but agrees with the float64 shadow where the two disagree is
AMBIGUOUS, not FAIL.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Optional

import numpy as np

from .boxes import match_instances
from .tolerances import ResolvedTolerance

# The precision the reference is shadowed in, per row precision; None: no emulation on
# the CPU (the table row applies alone).
SHADOW_PRECISION = {"fp32": "fp64", "fp16": "fp16", "autocast": "autocast", "tf32": None}

# What a row precision's rounding is called, and how the shadow measured it.
ROUNDING = {"fp32": "float32 rounding", "fp16": "fp16 rounding", "autocast": "autocast (fp16) rounding",
            "tf32": "TF32 rounding"}
HOW = {"fp64": "float64 shadow", "fp16": "the reference in fp16 on the CPU",
       "autocast": "the reference under autocast on the CPU"}
NO_EMULATION = {"tf32": "no TF32 emulation on the CPU"}

# Shadow pairs overlapping less than this are different decisions (a flipped proposal),
# not the same box moved by rounding: they are knife-edge evidence, never noise.
KNIFE_EDGE_IOU = 0.5

# The median of fewer per-pair values than this is no measure of an image's rounding.
MIN_PAIRS = 3

# tolerance field <- the measured quantity that widens it, per kind.
WIDENS: Mapping[str, Mapping[str, str]] = {
    "boxes": {"corner_px": "corner_px", "score_abs": "score", "ambiguity_margin": "score", "shift_px": "shift_px"},
    "keypoints": {"pixel": "pixel", "score_abs": "score", "peak_gap": "score", "shift_px": "shift_px"},
    "masks": {"soft_abs": "soft"},
}


@dataclass
class Shadow:
    """The reference's answers to the same feed in the shadow precision, or why there are none."""

    precision: Optional[str]
    outputs: Optional[dict] = None
    why_not: str = ""


@dataclass
class NoiseFloor:
    """The measured noise of one example, and what it does to a tolerance row.

    values: (kind, quantity) -> the largest |reference - shadow| over the example's
    samples and shadow-matched, stable instances.
    instances: the shadow's Instances per sample (knife-edge evidence), or None.
    """

    precision: str
    factor: float
    how: str = ""
    values: dict = field(default_factory=dict)
    instances: Optional[list] = None
    why_not: str = ""
    # sample -> {reference instance: {"limits": {(kind, field): factor x its own noise},
    # "why": [...]}}: pairs whose own |reference - shadow| stands beyond factor x the
    # example's typical one. They widen only their own limits, and a difference within
    # them is a knife edge (AMBIGUOUS), never a pass (deploy_parity/compare/boxes.py).
    unstable: dict = field(default_factory=dict)
    worst: dict = field(default_factory=dict)  # (kind, quantity) -> the largest, unstable pairs included
    tensors: dict = field(default_factory=dict)  # raw output -> |reference - shadow| per element
    # Whether a reduced precision's robustness verdict is due here (the parity check's own
    # comparison, not the batch check or a localiser's stage).
    judges_robustness: bool = True

    @property
    def measured(self) -> bool:
        return not self.why_not

    @property
    def rounding(self) -> str:
        return ROUNDING.get(self.precision, f"{self.precision} rounding")

    def limits_only(self) -> "NoiseFloor":
        """The same limits without the knife-edge evidence and robustness verdict: for checks
        whose two sides are not reference and candidate (batch consistency: image i's two
        candidate runs; a localiser's stages), where the shadow has no side to take and the
        reference's instance numbers mean nothing."""
        return replace(self, instances=None, unstable={}, judges_robustness=False)

    def widen(self, tol: ResolvedTolerance) -> ResolvedTolerance:
        """`tol` with each noise-tracked field at max(floor, factor x noise). (Raw tensors
        are widened per element: compare_tensors reads `tensors`.)"""
        if not self.measured:
            return tol.with_noise(tol.values, {}, f"table row only: {self.why_not}")
        fields = {name: (tol.kind if quantity != "shift_px" else "shift", quantity)
                  for name, quantity in WIDENS.get(tol.kind, {}).items()}
        values, noise = dict(tol.values), {}
        for name, key in fields.items():
            if name not in values or key not in self.values:
                continue
            measured = float(self.values[key])
            limit = max(float(values[name]), self.factor * measured)
            noise[name] = {"noise": measured, "factor": self.factor, "floor": float(values[name]), "limit": limit,
                           "how": self.how, "rounding": self.rounding}
            values[name] = limit
        return tol.with_noise(values, noise, f"limits = max(table floor, {self.factor:g} x {self.how})")


# quantity -> (what a reader calls it, unit), for the robustness message.
QUANTITY_NAMES = {("boxes", "corner_px"): ("box corners", " px"), ("boxes", "score"): ("box scores", ""),
                  ("keypoints", "pixel"): ("keypoints", " px"), ("keypoints", "score"): ("keypoint scores", ""),
                  ("masks", "soft"): ("soft masks", "")}
FLOOR_FIELDS = {("boxes", "corner_px"): "corner_px", ("boxes", "score"): "score_abs",
                ("keypoints", "pixel"): "pixel", ("keypoints", "score"): "score_abs", ("masks", "soft"): "soft_abs"}


def robustness(noise: NoiseFloor, row) -> Optional["Comparison"]:
    """For a reduced precision (fp16, autocast): FAIL when the reference itself, run in that
    precision on the CPU, already moves a quantity beyond the row's floor. Such a model is
    not robust to the precision, whatever the engine does: the report says so apart from
    the engine's own comparisons (which its noise floor then judges)."""
    from .verdict import Comparison, Verdict

    if noise.precision == "fp32" or not noise.measured or not noise.judges_robustness:
        return None
    measured = {**noise.values, **noise.worst}  # unstable pairs count here
    beyond = []
    for key, value in sorted(measured.items()):
        if key not in FLOOR_FIELDS:
            continue
        floor = float(row(key[0])[FLOOR_FIELDS[key]])
        if value > floor:
            name, unit = QUANTITY_NAMES[key]
            beyond.append((key, f"{name} {value:.3g}{unit} (the {noise.precision} row allows {floor:g}{unit})"))
    if not beyond:
        return None
    return Comparison(
        kind="robustness", output=f"model under {noise.precision}", verdict=Verdict.FAIL,
        metrics={f"{k[0]}.{k[1]}": float(measured[k]) for k, _ in beyond},
        message=(f"the model itself is not {noise.precision}-robust: {noise.how} moves " + "; ".join(t for _, t in beyond)
                 + ". This is the model, not the engine: the engine's own comparisons are judged against this "
                   "floor. Keep this model in fp32, or make it robust (e.g. keep its head in fp32)"),
        noise={"note": noise.how})


# The comparisons a sensitivity knife edge may excuse: what the model's own answer is made
# of (never the systematic shift: a consistent offset is no knife edge).
STRUCTURED_KINDS = ("boxes", "keypoints", "masks")
# Error metrics (larger is worse) a candidate must stay within, and counts it may not exceed.
SENSITIVITY_ERRORS = ("max_corner_px", "max_score_abs", "max_px", "max_soft_abs")
SENSITIVITY_COUNTS = ("n_unmatched_ref", "n_unmatched_cand", "label_mismatches")
# The jittered runs are two samples of the model's sensitivity, the candidate's rounding a
# third: its error may reach twice the larger sample's.
SENSITIVITY_SLACK = 2.0


def _within_sensitivity(candidate: dict, moved: list) -> bool:
    """The candidate's errors are no larger than what the reference's own answer did under
    the jitter: each error metric within SENSITIVITY_SLACK x the largest jittered one, each
    count (unmatched instances, changed labels) within the largest jittered one."""
    for name in SENSITIVITY_ERRORS:
        if name in candidate:
            if not candidate[name] <= SENSITIVITY_SLACK * max(float(m.get(name, 0.0)) for m in moved):
                return False
    for name in SENSITIVITY_COUNTS:
        if name in candidate and candidate[name] > max(m.get(name, 0) for m in moved):
            return False
    return True


def excuse_input_knife_edges(comparisons: list, jittered_runs: list, jitter: float) -> list:
    """Failing comparisons become AMBIGUOUS where the reference's own answer, with its input
    moved by `jitter` (relative), fails the same output's limits at least as badly: the
    model sits on a knife edge inside itself (a proposal or NMS decision its float64 run
    happened not to flip), and a runtime whose rounding differs by that much may take
    either side. A candidate that errs further than the jitter moves the reference (a
    +0.5 px shift beside a 0.1-px sensitivity) still fails.

    jittered_runs: per jittered feed, the comparisons of the reference against its own
    jittered answer (the same judge and noise floor)."""
    from .verdict import Verdict

    moved = {}
    for run in jittered_runs:
        for c in run:
            if c.verdict == Verdict.FAIL and c.kind in STRUCTURED_KINDS:
                moved.setdefault(c.output, []).append(c)
    for comparison in comparisons:
        runs = moved.get(comparison.output, [])
        if (comparison.verdict == Verdict.FAIL and comparison.kind in STRUCTURED_KINDS and runs
                and _within_sensitivity(comparison.metrics, [r.metrics for r in runs])):
            worst = runs[0].message
            comparison.verdict = Verdict.AMBIGUOUS
            comparison.evidence = {**comparison.evidence, "input_knife_edge": {
                "jitter": jitter, "reference_vs_jittered": worst, "against_reference": comparison.message}}
            comparison.message = (
                f"the reference sits on a knife edge inside the model: its own answer, on the same feed times "
                f"(1 + {jitter:.2g} x noise) (the size by which runtimes' resizes differ), already fails these "
                f"limits as badly ({worst}). Against the reference: {comparison.message}")
    return comparisons


def unmeasured(precision: str, factor: float, why: str) -> NoiseFloor:
    return NoiseFloor(precision, factor, why_not=why)


def _as_reference_dtypes(reference: dict, shadow: dict) -> dict:
    """The shadow's outputs in the reference's dtypes, so the case's own to_instances
    reads both alike (float64 -> float32 adds half an ulp: far below any noise floor)."""
    out = {}
    for name, value in shadow.items():
        ref = reference.get(name)
        value = np.asarray(value)
        if ref is not None and np.asarray(ref).dtype != value.dtype:
            value = value.astype(np.asarray(ref).dtype)
        out[name] = value
    return out


def _per_pair(pairs: dict, key, sample: int, ref_index, values) -> None:
    """Record each shadow-matched pair's |reference - shadow| of one quantity."""
    for i, value in zip(np.asarray(ref_index).reshape(-1), np.asarray(values, dtype=np.float64).reshape(-1)):
        if np.isfinite(value):
            pairs.setdefault(key, []).append((sample, int(i), float(value)))


def _measure_sample(sample: int, ref, shadow, pairs: dict, deltas: list, peak_gap_floor: float) -> None:
    """One sample's |reference - shadow| per shadow-matched pair and quantity, into `pairs`;
    signed point errors into `deltas`."""
    matching = match_instances(ref, shadow)
    if not matching.pairs:
        return
    r, s = matching.ref_index, matching.cand_index
    same = matching.iou[r, s] >= KNIFE_EDGE_IOU
    if ref.labels is not None and shadow.labels is not None:
        same &= np.asarray(ref.labels).reshape(-1)[r] == np.asarray(shadow.labels).reshape(-1)[s]
    r, s = r[same], s[same]
    if len(r) == 0:
        return
    delta = shadow.boxes[s] - ref.boxes[r]
    if np.isfinite(delta).all():
        _per_pair(pairs, ("boxes", "corner_px"), sample, r, np.abs(delta).max(axis=1))
        deltas.append((sample, r, delta[:, [0, 2]], delta[:, [1, 3]]))
    _per_pair(pairs, ("boxes", "score"), sample, r, np.abs(shadow.scores[s] - ref.scores[r]))
    if ref.keypoints is not None and shadow.keypoints is not None:
        rk = np.asarray(ref.keypoints, dtype=np.float64)[r]
        sk = np.asarray(shadow.keypoints, dtype=np.float64)[s]
        if rk.shape == sk.shape and rk.size:
            steady = np.ones(rk.shape[:2], dtype=bool)
            if ref.keypoint_peak_gap is not None:  # a tied heatmap peak jumps: a decision, not noise
                steady = np.asarray(ref.keypoint_peak_gap, dtype=np.float64)[r] >= peak_gap_floor
            d = sk[..., :2] - rk[..., :2]
            distance = np.where(steady, np.hypot(d[..., 0], d[..., 1]), 0.0)
            _per_pair(pairs, ("keypoints", "pixel"), sample, r, distance.max(axis=1))
            deltas.append((sample, r, np.where(steady, d[..., 0], np.nan), np.where(steady, d[..., 1], np.nan)))
            _per_pair(pairs, ("keypoints", "score"), sample, r, np.abs(sk[..., 2] - rk[..., 2]).max(axis=1))
    if ref.masks is not None and shadow.masks is not None:
        rm, sm = np.asarray(ref.masks), np.asarray(shadow.masks)
        if rm.shape[1:] == sm.shape[1:] and np.issubdtype(rm.dtype, np.floating):
            _per_pair(pairs, ("masks", "soft"), sample, r,
                      [float(np.abs(sm[j].astype(np.float64) - rm[i].astype(np.float64)).max(initial=0.0))
                       for i, j in zip(r, s)])


def _typical(values: np.ndarray) -> float:
    """The example's typical per-pair rounding: the median of three or more pairs, the
    smaller of two (which of two is the odd one is unknowable: the smaller never lets an
    unstable pair widen a stable one's limit), the one value of one pair."""
    if len(values) >= MIN_PAIRS:
        return float(np.median(values))
    return float(values.min())


def _robust_floor(entries: list, factor: float, floor: float) -> tuple:
    """(the example's noise floor, the unstable pairs, the typical value): the largest
    per-pair value once the pairs beyond factor x the typical one are set apart. One
    numerically unstable box (a random head whose box moves 16 px between float32 and
    float64) must not widen the limit of every other box in the image: it widens only its
    own limit, and a difference there within its own rounding is a knife edge (AMBIGUOUS)."""
    values = np.array([v for _, _, v in entries])
    typical = _typical(values)
    outlier = (values > factor * typical) & (values > floor)
    unstable = [entry for entry, out in zip(entries, outlier) if out]
    kept = values[~outlier]
    return (float(kept.max()) if kept.size else 0.0), unstable, typical


def measure(case, reference: dict, shadow: Shadow, image_size, batch: int, precision: str, factor: float,
            peak_gap_floor: float = 0.0, floors: Optional[Mapping] = None) -> NoiseFloor:
    """The noise floor of one example: the reference against its shadow, through the case's
    own to_instances (so it measures what the comparators compare)."""
    if shadow.precision is None:
        return unmeasured(precision, factor, NO_EMULATION.get(precision, f"no shadow for {precision}"))
    if shadow.outputs is None:
        return unmeasured(precision, factor, shadow.why_not)
    how = HOW.get(shadow.precision, shadow.precision)
    outputs = _as_reference_dtypes(reference, shadow.outputs)
    pairs: dict = {}
    instances, deltas = [], []
    for index in range(batch):
        ref_inst = case.to_instances(reference, index, image_size)  # the comparators read it alike: errors surface there
        try:
            shadow_inst = case.to_instances(outputs, index, image_size)
        except Exception as error:  # noqa: BLE001 - the shadow is evidence; without it the table applies
            return unmeasured(precision, factor, f"the case's to_instances failed on the {how}'s outputs: "
                                                 f"{type(error).__name__}: {error}")
        instances.append(shadow_inst)
        _measure_sample(index, ref_inst, shadow_inst, pairs, deltas, peak_gap_floor)
    values, worst, unstable = {}, {}, {}
    for key, entries in pairs.items():
        floor = float(floors.get(key, 0.0)) if floors else 0.0
        values[key], outliers, typical = _robust_floor(entries, factor, floor)
        worst[key] = max(v for _, _, v in entries)
        name, unit = QUANTITY_NAMES[key]
        for sample, i, value in outliers:
            own = unstable.setdefault(sample, {}).setdefault(i, {"limits": {}, "why": []})
            own["limits"][(key[0], FLOOR_FIELDS[key])] = factor * value
            own["why"].append(f"{name} {value:.3g}{unit}, over {factor:g} x the example's typical {typical:.2g}{unit}")
    if deltas:  # the reference's own mean signed error, over its stable points
        def stable(axis):
            chunks = []
            for sample, r, *xy in deltas:
                keep = ~np.isin(r, list(unstable.get(sample, {})))
                chunks.append(np.asarray(xy[axis], dtype=np.float64)[keep].ravel())
            kept = np.concatenate(chunks)
            return kept[np.isfinite(kept)]

        dx, dy = stable(0), stable(1)
        if dx.size and dy.size:
            values[("shift", "shift_px")] = float(max(abs(dx.mean()), abs(dy.mean())))
    tensors = {}
    for spec in case.outputs:
        if spec.kind == "raw" and spec.name in outputs:
            a, b = np.asarray(reference[spec.name]), np.asarray(outputs[spec.name])
            if np.issubdtype(a.dtype, np.floating) and a.shape == b.shape and a.size:
                # Per element: a raw tensor may mix scales (coordinates near 640 beside
                # probabilities); NaN/Inf in the shadow widen nothing.
                tensors[spec.name] = np.nan_to_num(np.abs(a.astype(np.float64) - b.astype(np.float64)),
                                                   nan=0.0, posinf=0.0, neginf=0.0)
    return NoiseFloor(precision, factor, how, values, instances, unstable=unstable, worst=worst, tensors=tensors)
