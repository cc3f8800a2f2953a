"""Task agreement of INT8 graphs on ONNX Runtime CPU: the harness's own quantization of
each model's fp32 export, and the calibration mistakes users make (images in 0-255 for a
model that takes 0-1, BGR for RGB, blank images), each quantized here from the same
export and handed over as the user's own int8_onnx_path. The figures behind the
tolerance table's ("agreement", *, "int8") row.

    python tools/validation/int8_agreement.py pose-rtmo detr-tiny keypoint-rcnn mask-rcnn mask-rcnn-fixed
    python tools/validation/int8_agreement.py tv-fcos yolo-pose yolo-seg
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

MISTAKES = {
    "0-255 range": lambda feed: {k: (v * 255.0 if v.dtype.kind == "f" and v.ndim == 4 else v) for k, v in feed.items()},
    "BGR": lambda feed: {k: (v[:, ::-1].copy() if v.ndim == 4 and v.shape[1] == 3 else v) for k, v in feed.items()},
    "blank": lambda feed: {k: (np.zeros_like(v) if v.ndim == 4 else v) for k, v in feed.items()},
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--model-module", action="append", default=[])
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "deploy_parity"))
    args = parser.parse_args(argv)

    from deploy_parity.backends import BACKENDS, RunnerContext, onnx_for
    from deploy_parity.check import check_agreement
    from deploy_parity.export.quantize import (calibration_feeds, calibration_for, quantize_graph,
                                               sort_topologically)
    from deploy_parity.pool import RunnerPool
    from deploy_parity.registry import build_registry
    from deploy_parity.strategies import agreement_examples, export_size_example

    registry = build_registry(args.model_module)
    backend = BACKENDS["onnxrt-cpu-int8"]
    work = Path(args.cache_dir) / "int8-planted"
    work.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        case = registry.get(name)
        pool = RunnerPool(RunnerContext(cache_dir=Path(args.cache_dir)))
        bounds = pool.bounds(case, backend)
        variants = {"correct (harness quantization)": case}
        probe = export_size_example(case, bounds)
        target = case.deploy_target(probe.height, probe.width, probe.dtypes)
        fp32 = onnx_for(case, target, pool.context)
        for mistake, transform in MISTAKES.items():
            calibration = replace(calibration_for(case, target), transform=transform, name=mistake)
            path = work / f"{name}-{target.key()}-{mistake.replace(' ', '_')}.onnx"
            quantize_graph(fp32, calibration_feeds(case, target, calibration), path)
            sort_topologically(path)
            variants[f"calibrated on {mistake}"] = replace(case, int8_onnx_path=path)
        for label, variant in variants.items():
            start = time.perf_counter()
            fresh = RunnerPool(RunnerContext(cache_dir=Path(args.cache_dir)))
            result = check_agreement(fresh, variant, backend, agreement_examples(variant, fresh.bounds(variant, backend)))
            figures = "; ".join(f"{c.kind} AP {c.metrics.get('ap', float('nan')):.3f} (worst "
                                f"{c.metrics.get('worst_size', '-')}: {c.metrics.get('worst_size_ap', float('nan')):.3f})"
                                for c in result.comparisons if "ap" in c.metrics)
            print(f"{name} | {label} | {result.verdict.value} | {figures or result.message[:200]} | "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
