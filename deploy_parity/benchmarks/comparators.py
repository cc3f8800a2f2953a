"""How long the structured comparators take on realistic sizes. Measures; never asserts.

    python -m deploy_parity.benchmarks.comparators [--runs 20] [--warmup 3] [--reports-dir DIR]

Prints median and p90 (ms) per workload and writes the same figures to
<reports dir>/bench_comparators.json (default reports/output, or PARITY_REPORTS_DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


from deploy_parity.compare.boxes import compare_boxes, match_instances
from deploy_parity.compare.instances import Instances
from deploy_parity.compare.keypoints import compare_keypoints
from deploy_parity.compare.masks import compare_masks
from deploy_parity.compare.structured import compare_instances
from deploy_parity.compare.tolerances import lookup
from deploy_parity.compare.verdict import Comparison, Verdict, combine

OUTPUT_NAME = "bench_comparators.json"
IMAGE = 640
BACKEND, PRECISION = "onnxruntime", "fp32"


def random_boxes(rng, n):
    """Detector-like boxes: anywhere in the image, overlapping each other."""
    xy = rng.uniform(0, IMAGE - 120, (n, 2))
    wh = rng.uniform(20, 120, (n, 2))
    return np.hstack([xy, xy + wh])


def pasted_masks(rng, boxes):
    """(R, 640, 640) float32 soft masks: an ellipse filling each box, smooth edge."""
    yy, xx = np.mgrid[0:IMAGE, 0:IMAGE].astype(np.float32)
    masks = np.empty((len(boxes), IMAGE, IMAGE), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        d = np.sqrt(((xx - (x1 + x2) / 2) / ((x2 - x1) / 2)) ** 2 + ((yy - (y1 + y2) / 2) / ((y2 - y1) / 2)) ** 2)
        with np.errstate(over="ignore"):  # far outside the ellipse exp overflows to inf: mask 0
            masks[i] = 1.0 / (1.0 + np.exp((d - 1.0) / 0.05))
    return masks


def reference_and_candidate(rng, n, keypoints=False, masks=False):
    """A reference and a candidate that is the reference, shuffled, with rounding-size noise."""
    boxes = random_boxes(rng, n)
    ref = Instances(
        boxes=boxes,
        scores=rng.uniform(0.3, 1.0, n),
        labels=rng.integers(0, 80, n),
        keypoints=(
            np.concatenate(
                [boxes[:, None, :2] + rng.uniform(0, 1, (n, 17, 2)) * (boxes[:, None, 2:] - boxes[:, None, :2]), rng.uniform(0, 1, (n, 17, 1))],
                axis=-1,
            )
            if keypoints
            else None
        ),
        keypoint_peak_gap=rng.uniform(0.01, 1.0, (n, 17)) if keypoints else None,
        masks=pasted_masks(rng, boxes) if masks else None,
    )
    order = rng.permutation(n)
    cand = ref.select(order)
    cand.boxes = cand.boxes + rng.uniform(-1e-3, 1e-3, cand.boxes.shape)
    cand.scores = cand.scores + rng.uniform(-1e-5, 1e-5, n)
    if keypoints:
        cand.keypoints = cand.keypoints + rng.uniform(-1e-3, 1e-3, cand.keypoints.shape)
    if masks:
        cand.masks = cand.masks + rng.uniform(-1e-5, 1e-5, (1, IMAGE, IMAGE)).astype(np.float32)
    return ref, cand


def time_it(fn, runs, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    times = np.array(times)
    return {
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "min_ms": float(times.min()),
        "runs": runs,
        "warmup": warmup,
    }


def workloads(rng):
    tol = {kind: lookup(kind, BACKEND, PRECISION) for kind in ("boxes", "keypoints", "masks")}

    ref, cand = reference_and_candidate(rng, 300)
    yield "compare_boxes: 300 boxes", lambda: compare_boxes(ref, cand, tol["boxes"], score_threshold=0.25)

    kp_ref, kp_cand = reference_and_candidate(rng, 100, keypoints=True)
    kp_matching = match_instances(kp_ref, kp_cand)
    yield "compare_keypoints: 100 instances x 17", lambda: compare_keypoints(kp_ref, kp_cand, kp_matching, tol["keypoints"])

    full_ref, full_cand = reference_and_candidate(rng, 100, keypoints=True, masks=True)
    mask_matching = match_instances(full_ref, full_cand)
    yield "compare_masks: 100 masks 640x640", lambda: compare_masks(full_ref, full_cand, mask_matching, tol["masks"])

    # Worst case for the mask comparator: every pair has a flipped pixel, so every pair's
    # boundary is traced (identical thresholded masks skip that step). The flipped pixel
    # sits at the threshold on both sides, so the comparison still passes.
    flip_ref = full_ref.select(np.arange(len(full_ref)))
    flip_cand = full_cand.select(np.arange(len(full_cand)))
    flip_ref.masks, flip_cand.masks = flip_ref.masks.copy(), flip_cand.masks.copy()
    for r, c in mask_matching.pairs:
        y, x = np.unravel_index(np.argmin(np.abs(flip_ref.masks[r] - 0.5)), (IMAGE, IMAGE))
        flip_ref.masks[r, y, x], flip_cand.masks[c, y, x] = 0.5 + 1e-4, 0.5 - 1e-4
    yield "compare_masks: 100 masks 640x640, a flip in every pair", lambda: compare_masks(
        flip_ref, flip_cand, mask_matching, tol["masks"]
    )

    yield "compare_instances: 100 boxes+keypoints+masks 640x640", lambda: compare_instances(
        full_ref, full_cand, backend=BACKEND, precision=PRECISION, score_threshold=0.25
    )


def verdict_of(result) -> Verdict:
    if isinstance(result, Comparison):
        return result.verdict
    if isinstance(result, tuple):  # compare_boxes: (Comparison, Matching)
        return result[0].verdict
    return combine(c.verdict for c in result)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deploy_parity.benchmarks.comparators",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--reports-dir", default=os.environ.get("PARITY_REPORTS_DIR", "reports/output"),
                        help="where bench_comparators.json goes (default reports/output, or PARITY_REPORTS_DIR)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    results = {}
    for name, fn in workloads(rng):
        results[name] = time_it(fn, args.runs, args.warmup)
        # Recorded because a comparator failing its own clean input would time the wrong path.
        results[name]["verdict"] = verdict_of(fn()).value

    width = max(len(name) for name in results)
    print(f"{'workload':<{width}}  {'median ms':>10}  {'p90 ms':>10}  verdict")
    for name, r in results.items():
        print(f"{name:<{width}}  {r['median_ms']:>10.2f}  {r['p90_ms']:>10.2f}  {r['verdict']}")

    output = Path(args.reports_dir) / OUTPUT_NAME
    output.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "results": results,
    }
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {output}")


if __name__ == "__main__":
    main()
