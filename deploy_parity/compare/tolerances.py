"""The one tolerance table. Every comparison the harness makes looks its limits up here.

Keyed by (output kind, backend, precision). "*" matches any backend or precision; the
most specific row wins (exact backend beats "*", exact precision beats "*"). Each row
says why it is as loose as it is. A model case may override a row; the override, and
its reason, show up in the report next to every comparison that used it.

The noise floor (deploy_parity/compare/noise.py): every boxes, keypoints, masks and
tensor limit below is a FLOOR. Each example's reference is also run in a shadow
precision (float64 for the fp32 rows), and each limit becomes max(floor, factor x how
far the model's own rounding moved that quantity on that example), the factor in the
"noise" rows. Records and messages carry both numbers.

Kinds and their fields:
  tensor      atol, rtol: |a-b| <= atol + rtol*|ref| elementwise; max_fraction_out: the
              fraction of elements allowed outside (0 means none).
  boxes       corner_px: max corner error in pixels; min_iou per matched pair (never
              stricter than the IoU a corner_px error leaves a box of that size, so tiny
              boxes are judged by their corners); score_abs, score_rtol: a score passes
              when |a-b| <= score_abs + score_rtol*|ref| (scores may be unbounded logits);
              ambiguity_margin: reference scores this close to the score threshold, the
              top-k cut or a tied competitor inside NMS may appear/disappear;
              shift_px: the floor of the systematic-shift check (below).
  keypoints   pixel: max per-keypoint error in pixels (visible keypoints only);
              min_oks per instance (not judged for zero-area instances); score_abs,
              score_rtol as for boxes; peak_gap: reference heatmap peaks closer than
              this are ties (ambiguous, not failures); shift_px as for boxes.
  masks       min_iou of thresholded masks; max_boundary_disagreement: fraction of
              boundary pixels that may flip; soft_abs: max soft-mask difference. Pixels
              whose reference soft value lies within soft_abs of the threshold sit on the
              decision boundary: counted and reported, never judged.
  shift       the systematic-shift check reads shift_px from the boxes / keypoints rows
              and z: per example, the mean signed error of all matched box corners and
              keypoints in x and in y fails when it exceeds shift_px AND z standard
              errors of itself (a consistent shift, not scatter). Catches a half-pixel
              convention error that stays under every per-point limit.
  (batch consistency, "a batch of N == N runs of batch 1", uses the rows of the kinds
  above for the backend under test: a batch may legitimately change rounding.)
  determinism the same fields as `tensor`, for "two runs give the same output".
  suite       max_ambiguous_fraction, max_vacuous_fraction: how many of a suite's cases
              may be ambiguous / vacuous before the suite itself fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Optional


@dataclass(frozen=True)
class Tolerance:
    values: Mapping[str, float]
    reason: str


@dataclass(frozen=True)
class ResolvedTolerance:
    kind: str
    backend: str
    precision: str
    values: Mapping[str, float]
    reason: str
    source: str  # "table[(kind, backend, precision)]" or "override by model <name>"
    # What the model's own rounding did to the limits (deploy_parity/compare/noise.py):
    # field -> {"noise", "factor", "floor", "limit", "how"} for every field a measured
    # noise floor applied to; `noise_note` says how it was measured, or why it was not.
    noise: Mapping[str, Mapping] = field(default_factory=dict)
    noise_note: str = ""

    def __getitem__(self, key: str) -> float:
        return self.values[key]

    def with_noise(self, values: Mapping[str, float], noise: Mapping[str, Mapping], note: str) -> "ResolvedTolerance":
        return replace(self, values=dict(values), noise=dict(noise), noise_note=note)

    def explain(self, name: str, unit: str = "") -> str:
        """Why the limit of field `name` is what it is, for a failure message: the model's
        own rounding of that quantity, the factor and the limit it gives, or the table row
        when the noise floor was not measured. "" when the tolerance says nothing more."""
        entry = self.noise.get(name)
        if entry is None:  # the floor alone: say why only when no noise floor was measured at all
            return f" ({self.noise_note})" if self.noise_note.startswith("table row only") else ""
        scaled = entry["factor"] * entry["noise"]
        which = (f"{entry['factor']:g} x" if scaled >= entry["floor"]
                 else f"the table's floor; {entry['factor']:g} x would be {scaled:.2g}{unit}")
        return (f" (this model's {entry['rounding']} moves it {entry['noise']:.2g}{unit} ({entry['how']}); "
                f"limit {entry['limit']:.3g}{unit}: {which})")

    def as_record(self) -> dict:
        record = {"values": dict(self.values), "reason": self.reason, "source": self.source}
        if self.noise or self.noise_note:
            record["noise"] = {name: dict(entry) for name, entry in self.noise.items()}
            record["noise_note"] = self.noise_note
        return record


ANY = "*"

TOLERANCES: dict[tuple[str, str, str], Tolerance] = {
    # ---- fp32 on CPU: the same math, differently fused; differences are rounding only.
    ("tensor", ANY, "fp32"): Tolerance(
        {"atol": 1e-4, "rtol": 1e-4, "max_fraction_out": 0.0},
        "fp32 kernels differ only in summation order and fusion: a few ulps per op, "
        "accumulated over ~10 layers of a small model",
    ),
    # Measured on the zoo (pytest suites --hypothesis-profile ci, onnxrt-cpu vs eager,
    # images <= 256 px): box corners <= 6.1e-5 px, keypoints <= 6.2e-5 px, probability
    # scores <= 9.2e-7, heatmap-logit scores <= 3.1e-5, soft masks <= 7.1e-6.
    ("boxes", ANY, "fp32"): Tolerance(
        {"min_iou": 0.99, "corner_px": 1e-2, "score_abs": 1e-5, "score_rtol": 1e-4,
         "ambiguity_margin": 2e-4, "shift_px": 2e-3},
        "fp32 spacing is 2.4e-4 px at a 2048-px coordinate; a regression output of a deep "
        "conv stack differs between kernels by ~5e-6 relative (summation order, Winograd), "
        "times a box of up to 2048 px: 1e-2 px (zoo: 6.1e-5 px at <= 256 px). Probability "
        "scores: 1e-5 (zoo 9.2e-7); unbounded logit scores err relatively: 1e-4 (torchvision "
        "heatmap logits near 25 measured 4.6e-5). Scores within 2e-4 of a cut may flip. A "
        "systematic shift of 2e-3 px is 8 ulps at 2048 px: rounding averages far below it",
    ),
    ("keypoints", ANY, "fp32"): Tolerance(
        {"pixel": 1e-2, "min_oks": 0.99, "score_abs": 1e-4, "score_rtol": 1e-4, "peak_gap": 1e-4,
         "shift_px": 2e-3},
        "keypoints are decoded like box corners (prior + offset x stride, or a heatmap cell "
        "mapped through its box): the box rows' 1e-2 px and 2e-3 px shift floor apply (zoo: "
        "6.2e-5 px). Keypoint scores are often heatmap logits, whose rounding follows the "
        "heatmap's magnitude (~10-25), not the score's: measured 3.1e-5 absolute at scores near "
        "0 (keypoint-rcnn, ci) and 2.0e-5 at 0.07 (nightly), so 1e-4 absolute plus 1e-4 "
        "relative. Heatmap peaks within 1e-4 of each other are ties that argmax may break",
    ),
    ("masks", ANY, "fp32"): Tolerance(
        {"min_iou": 0.98, "max_boundary_disagreement": 0.05, "soft_abs": 4e-3},
        "soft masks: sigmoid of a sum of coefficient x prototype products; prototypes reach "
        "245 in YOLOv8-seg, whose fp32 rounding moves sigmoid by up to 2e-3 (measured; zoo "
        "7.1e-6): 2x that. Pixels within soft_abs of the threshold are excused; the IoU and "
        "boundary limits are for masks delivered binary, where no soft value excuses a flip",
    ),
    # The noise floor (deploy_parity/compare/noise.py): every boxes / keypoints / masks /
    # tensor limit above is max(the row's value, factor x this model's own rounding of that
    # quantity on the example at hand), measured against a shadow of the reference.
    ("noise", ANY, "fp32"): Tolerance(
        {"factor": 20.0, "input_jitter": 2.0 ** -16},
        "a correct fp32 export's error is float32 rounding of its own, of the same order as the reference's "
        "(|ref32 - ref64|) but from other kernels (summation order, Winograd, fused ops), so some multiple of it. "
        "Set on the zoo and its real architectures (pose-rtmo, detr-tiny, keypoint-rcnn, mask-rcnn, mask-rcnn-fixed, "
        "tv-keypoint-rcnn, tv-mask-rcnn, tv-fcos, yolo-pose, yolo-seg; tox -e parity, ci profile, then "
        "tools/validation/noise_ratios.py): the largest candidate error / noise floor was 6.0 for box corners "
        "(yolo-seg, onnxrt-cpu), 10 for box scores (yolo-pose, at 6e-7, a few ulps), 3.4 for keypoint scores, 2.2 "
        "for keypoint positions, 5.0 for soft masks; 20 is twice the largest. The table's own values stay as floors "
        "(a model whose rounding is below them is judged by them). input_jitter: where a comparison still fails, "
        "the reference is re-run on its feed times (1 + input_jitter x N(0, 1)); 2^-16 = 1.5e-5 is the size by "
        "which ONNX Runtime's and torch's bilinear resizes of [0, 1] images differ (1.1e-5 to 2.0e-5 measured at "
        "189x100, 190x100, 315x320 -> 256x192). A reference whose own answer fails the same limits under that "
        "change, at least as badly as the candidate (each error within 2x the larger of two jittered runs, no more "
        "unmatched instances or changed labels), sits on a knife edge inside the model (an RPN or NMS decision its "
        "float64 run happened not to flip): the failure is AMBIGUOUS with that evidence",
    ),
    ("noise", ANY, ANY): Tolerance(
        {"factor": 10.0},
        "the reduced precisions' shadow is the reference itself run in that precision on the CPU (fp16 weights "
        "and activations, fp32 accumulation; autocast's per-op choice): a GPU engine may accumulate in fp16 too, "
        "about 10x the error of fp32 accumulation (the fp16 rows' own reasoning). Not yet measured on a GPU",
    ),
    ("layer", ANY, ANY): Tolerance(
        {"factor": 20.0, "rel_floor": 1e-6, "atol": 1e-4, "rtol": 1e-4},
        "the localiser (deploy_parity/localize/) judges each module's or node's tensor against the model's own "
        "float32 rounding there: |graph - torch32| <= factor x max|torch32 - torch64| + rel_floor x max|torch64| "
        "(rel_floor: 8 float32 ulps of the tensor's largest value, for tensors both sides compute exactly). Set on "
        "the zoo's pose-rtmo, detr-tiny, keypoint-rcnn, mask-rcnn, mask-rcnn-fixed (tools/validation/"
        "layer_ratios.py, 4 examples each across sizes): on correct exports the largest ratio was 3.6; 20 is 5.6x "
        "it. Checked on models that played no part: tv-fcos, tv-keypoint-rcnn, tv-mask-rcnn, yolo-pose, yolo-seg "
        "(largest 4.5) and tools/validation/unseen_cases.py's RetinaNet-R50, Faster R-CNN MobileNetV3, SSDlite, "
        "YOLO11 detect (both exporters), YOLO11 seg (largest 7.4, an SSDlite avgpool): none blamed. A planted "
        "change is orders beyond it (x1.05 on a weight: relative 5e-2). atol, rtol: the fixed fallback where the "
        "model cannot run in float64, and between two runtimes' kernels (no float64 graph run exists)",
    ),
    ("agreement", ANY, "int8"): Tolerance(
        {"box_ap": 0.5, "keypoint_ap": 0.5, "mask_ap": 0.5},
        "the least COCO AP@[.5:.95] an INT8 graph keeps against the reference's own answers as ground truth "
        "(deploy_parity/compare/agreement.py), per task. Set on the zoo (tools/validation/int8_agreement.py, the "
        "8-example evaluation set): the harness's own quantization scored 0.80-0.98 (mask-rcnn masks 0.803 lowest, "
        "pose-rtmo keypoints 0.979 highest), while graphs calibrated on 0-255 images scored 0.000-0.001 and on blank "
        "images 0.07-0.20; 0.5 lies between with room both ways. Checked on real architectures that played no "
        "part: yolo-pose 0.92 / 0.93 and tv-mask-rcnn 0.91 / 0.87 pass, their 0-255 and blank calibrations score "
        "0.00-0.18 and fail; yolo-seg's masks score 0.38 with a correct calibration (boxes 0.95) and fail: random "
        "weights leave its soft masks near the 0.5 cut, where INT8 flips large regions",

    ),
    ("mutant", ANY, ANY): Tolerance(
        {"equivalent_within": 2.0},
        "the mutation self-test (deploy_parity/mutate/) calls a mutant equivalent when the unmutated graph's "
        "answer and the mutant's agree, on every example, within this many times the model's own float32 rounding "
        "(the noise floor, the table's fp32 rows as floors): each graph carries its own rounding of that size, so "
        "two of them differ by up to about twice it. Measured: an offset before a LayerNorm (detr-tiny) moved boxes "
        "1.06x the rounding; one on a YOLO stride-32 class branch no detection came from, 1.1x",
    ),
    ("shift", ANY, ANY): Tolerance(
        {"z": 6.0},
        "the mean of n rounding errors has a standard error of spread/sqrt(n); a mean beyond "
        "6 standard errors (and the row's shift_px) is a consistent offset, not scatter",
    ),
    ("determinism", ANY, ANY): Tolerance(
        {"atol": 0.0, "rtol": 0.0, "max_fraction_out": 0.0},
        "the same backend on the same input must give bit-identical output",
    ),
    ("suite", ANY, ANY): Tolerance(
        {"max_ambiguous_fraction": 0.2, "max_vacuous_fraction": 0.2},
        "a few boundary cases are expected; a suite mostly ambiguous or vacuous proves nothing",
    ),
    # >>> GPU precisions (rows for the GPU backends of deploy_parity/backends/; see docs/gpu.md) >>>
    # Scale: the pose model run with fp16 weights and activations on CPU (fp32
    # accumulation) differs from fp32 by at most 0.11 px (boxes, keypoints) and 1.8e-4
    # (scores) on matched instances; GPU kernels may accumulate in fp16, so about 10x.
    # Instances at the top-k cut are selected differently when scores tie within that
    # error: the ambiguity margin must be at least score_abs + score_rtol (scores <= 1): 7e-3.
    # fp16 holds 11 significant bits: a logit score of magnitude s rounds by s*4.9e-4 per
    # op; measured on an H200 (tools/gpu_smoke.py, 2026-11-30): keypoint-rcnn's heatmap
    # logit 13.05 moved 0.040 (3.1e-3 relative) under autocast, so score_rtol is 5e-3. Coordinates round to fp16's spacing (0.25 px at
    # 256-512 px, 0.5 px at 512-1024): unbiased, so the mean over many points stays near
    # 0 and a shift floor of 0.1 px (a fifth of a 1024-px spacing) still catches 0.5 px.
    ("tensor", ANY, "fp16"): Tolerance(
        {"atol": 1e-2, "rtol": 1e-2, "max_fraction_out": 0.0},
        "fp16 keeps 11 significant bits (unit roundoff 4.9e-4) in weights, activations and "
        "sometimes accumulators: ~1e-2 relative after ~10 layers",
    ),
    ("boxes", ANY, "fp16"): Tolerance(
        {"min_iou": 0.98, "corner_px": 1.0, "score_abs": 2e-3, "score_rtol": 5e-3, "ambiguity_margin": 7e-3,
         "shift_px": 0.1},
        "fp16 activations: measured 0.11 px / 1.8e-4 score with fp32 accumulation, x10 for fp16 "
        "accumulation; scores within 2e-3 of the threshold or top-k cut may flip",
    ),
    ("keypoints", ANY, "fp16"): Tolerance(
        {"pixel": 1.0, "min_oks": 0.95, "score_abs": 2e-3, "score_rtol": 5e-3, "peak_gap": 2e-3,
         "shift_px": 0.1},
        "regressed keypoints are prior + offset*stride: the offset's fp16 error is scaled by the "
        "stride (up to 32): measured 0.11 px, x10 margin; heatmap peaks within 2e-3 are ties",
    ),
    ("masks", ANY, "fp16"): Tolerance(
        {"min_iou": 0.95, "max_boundary_disagreement": 0.1, "soft_abs": 2.5e-2},
        "measured on an H200: mask-rcnn's pasted soft masks moved 1.34e-2 under fp16 (every binary "
        "pixel agreed); 2x that. Pixels within soft_abs of 0.5 are excused as at the threshold",
    ),
    ("tensor", ANY, "tf32"): Tolerance(
        {"atol": 1e-2, "rtol": 1e-2, "max_fraction_out": 0.0},
        "TF32 rounds conv/matmul inputs to fp16's 10-bit mantissa (fp32 accumulation and range): "
        "errors of fp16's order per layer",
    ),
    ("boxes", ANY, "tf32"): Tolerance(
        {"min_iou": 0.98, "corner_px": 1.0, "score_abs": 2e-3, "score_rtol": 5e-3, "ambiguity_margin": 7e-3,
         "shift_px": 0.1},
        "TF32 conv inputs carry fp16's mantissa: the fp16 box limits apply (no overflow risk)",
    ),
    ("keypoints", ANY, "tf32"): Tolerance(
        {"pixel": 1.0, "min_oks": 0.95, "score_abs": 2e-3, "score_rtol": 5e-3, "peak_gap": 2e-3,
         "shift_px": 0.1},
        "TF32 conv inputs carry fp16's mantissa; offsets are scaled by the stride as in fp16",
    ),
    ("masks", ANY, "tf32"): Tolerance(
        {"min_iou": 0.95, "max_boundary_disagreement": 0.1, "soft_abs": 2.5e-2},
        "TF32 mask logits err like fp16's: the fp16 soft limit (measured 1.34e-2 on an H200, x2) applies",
    ),
    ("tensor", ANY, "autocast"): Tolerance(
        {"atol": 1e-2, "rtol": 1e-2, "max_fraction_out": 0.0},
        "torch.autocast runs convs/matmuls in fp16 (exp, sigmoid, reductions stay fp32): the "
        "conv outputs carry fp16 error",
    ),
    ("boxes", ANY, "autocast"): Tolerance(
        {"min_iou": 0.98, "corner_px": 1.0, "score_abs": 2e-3, "score_rtol": 5e-3, "ambiguity_margin": 7e-3,
         "shift_px": 0.1},
        "autocast: head logits come from fp16 convs, so boxes/scores err as in fp16; top-k on "
        "fp16 logits ties within 2e-3",
    ),
    ("keypoints", ANY, "autocast"): Tolerance(
        {"pixel": 1.0, "min_oks": 0.95, "score_abs": 2e-3, "score_rtol": 5e-3, "peak_gap": 2e-3,
         "shift_px": 0.1},
        "autocast: keypoint offsets come from fp16 convs and are scaled by the stride",
    ),
    ("masks", ANY, "autocast"): Tolerance(
        {"min_iou": 0.95, "max_boundary_disagreement": 0.1, "soft_abs": 2.5e-2},
        "autocast: mask logits from fp16 convs, sigmoid in fp32: as fp16 (measured 1.34e-2 on an H200 "
        "under fp16; autocast failed the old 1e-2 limit the same way)",
    ),
    # Measured on an H200 (tools/gpu_smoke.py, 2026-11-30): keypoint-rcnn on torch-cuda-fp32
    # gave a keypoint score of 1.98647 differing by 1.19e-7 (1 ulp) between two runs on
    # the same input; the other zoo models were bit-identical. CUDA reductions (cuBLAS
    # split-K, atomics) may sum in a different order per run.
    ("determinism", "torch-cuda-fp32", ANY): Tolerance(
        {"atol": 1e-6, "rtol": 1e-6, "max_fraction_out": 0.0},
        "CUDA kernels may reduce in a run-dependent order: measured 1 ulp (1.2e-7 at 2.0) on an H200; "
        "8 ulps of values near 1 allowed",
    ),
    ("determinism", "torch-cuda-fp16", ANY): Tolerance(
        {"atol": 2e-3, "rtol": 2e-3, "max_fraction_out": 0.0},
        "the same run-dependent CUDA reductions at fp16: a few ulps of fp16 (9.8e-4 at 1.0); not yet "
        "seen on an H200, where fp16 runs were bit-identical",
    ),
    ("determinism", "torch-cuda-autocast", ANY): Tolerance(
        {"atol": 2e-3, "rtol": 2e-3, "max_fraction_out": 0.0},
        "autocast's fp16 convs reduce in a run-dependent order like fp16's: a few fp16 ulps; not yet "
        "seen on an H200",
    ),
    # Determinism of TensorRT: tactics are chosen per build, not per run, but TensorRT may
    # choose kernels that reduce with atomics (split-K GEMM/conv), whose summation order
    # varies from run to run on the same engine and input: a few ulps, never more.
    ("determinism", "trt-fp32", ANY): Tolerance(
        {"atol": 1e-5, "rtol": 1e-5, "max_fraction_out": 0.0},
        "TensorRT may pick atomic (split-K) reductions: fp32 sums in varying order differ by ulps",
    ),
    ("determinism", "trt-tf32", ANY): Tolerance(
        {"atol": 1e-5, "rtol": 1e-5, "max_fraction_out": 0.0},
        "TensorRT may pick atomic (split-K) reductions; TF32 accumulates in fp32: ulps of fp32",
    ),
    ("determinism", "trt-fp16", ANY): Tolerance(
        {"atol": 1e-3, "rtol": 1e-3, "max_fraction_out": 0.0},
        "TensorRT may pick atomic (split-K) reductions with fp16 accumulators: ulps of fp16 (4.9e-4)",
    ),
    ("determinism", "onnxrt-trt", ANY): Tolerance(
        {"atol": 1e-5, "rtol": 1e-5, "max_fraction_out": 0.0},
        "ONNX Runtime's TensorRT provider runs TensorRT engines: atomic (split-K) reductions differ by ulps",
    ),
    # <<< GPU precisions <<<
}


def _candidates(kind: str, backend: str, precision: str):
    # Most specific first.
    yield (kind, backend, precision)
    yield (kind, backend, ANY)
    yield (kind, ANY, precision)
    yield (kind, ANY, ANY)


def has_row(kind: str, backend: str, precision: str, table: Optional[Mapping] = None) -> bool:
    """Is there a row for this comparison (without falling back to an error)?"""
    table = TOLERANCES if table is None else table
    return any(k in table for k in _candidates(kind, backend, precision))


def lookup(
    kind: str,
    backend: str,
    precision: str,
    overrides: Optional[Mapping] = None,
    model: str = "",
    table: Optional[Mapping] = None,
) -> ResolvedTolerance:
    """The tolerance for one comparison.

    `overrides` is a model case's own table, keyed like TOLERANCES (or by kind alone);
    an override replaces only the fields it names and must carry a reason.
    """
    table = TOLERANCES if table is None else table
    base_key = next((k for k in _candidates(kind, backend, precision) if k in table), None)
    if base_key is None:
        raise KeyError(
            f"no tolerance for kind={kind!r} backend={backend!r} precision={precision!r}; "
            "add a row to deploy_parity/compare/tolerances.py with its reason"
        )
    base = table[base_key]
    values = dict(base.values)
    reason = base.reason
    source = f"table[{base_key}]"
    if overrides:
        keys = [k for k in _candidates(kind, backend, precision) if k in overrides]
        if kind in overrides:
            keys.append(kind)
        if keys:
            override = overrides[keys[0]]
            values.update(override.values)
            reason = f"{override.reason} (overrides: {base.reason})"
            source = f"override by model {model} of {base_key}: {sorted(override.values)}"
    return ResolvedTolerance(kind, backend, precision, values, reason, source)
