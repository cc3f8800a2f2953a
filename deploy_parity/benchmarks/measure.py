"""Measure one (model case, backend): cold start, warm steady state, throughput by batch.

Cold, on a runner that did not exist before (bug class 5: the first inference pays for
memory set-up, kernel selection and lazy initialisation):
  artifact_seconds     the backend's factory: for graph backends, building the deploy
                       module and exporting it to ONNX, or finding it in the export cache
                       (`exported` says which); for torch backends, nothing yet.
  create_seconds       activate(): the ONNX Runtime session / TensorRT engine / the torch
                       module built and moved to its device.
  first_infer_seconds  the first inference on the new runner.
Warm: `warmup` inferences discarded, then `runs` timed ones (mean, median, p99, ...).
Throughput: warm median per batch size, as images per second.

Timings go through Runner.infer, as the suites do: it adds the feed's contract check
(microseconds) to the backend's own time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from deploy_parity.benchmarks.timing import device_synchronizer, latency_stats, no_sync, timed
from deploy_parity.inputs import make_feed


@dataclass(frozen=True)
class BenchSettings:
    warmup: int = 5
    runs: int = 50
    batches: tuple = (1, 2, 4, 8)
    throughput_warmup: int = 2
    throughput_runs: int = 10
    seed: int = 0


def bench_size(case, size: Optional[tuple] = None) -> tuple:
    """(height, width) to measure at: the one asked for, else the case's export size,
    else its smallest accepted square."""
    if size is not None:
        return size
    if case.sizes.export_height:
        return case.sizes.export_height, case.sizes.export_width
    return case.sizes.min_side, case.sizes.min_side


def _describe(case, backend, height: int, width: int, dtypes: tuple) -> dict:
    return {"model": case.name, "backend": backend.name, "precision": backend.precision, "gpu": backend.gpu,
            "height": height, "width": width, "dtypes": list(dtypes), "error": None}


def measure_backend(case, backend, context, settings: BenchSettings = BenchSettings(),
                    size: Optional[tuple] = None) -> dict:
    from deploy_parity.export.onnx_exporter import STATS

    height, width = bench_size(case, size)
    dtypes = case.default_dtypes()
    result = _describe(case, backend, height, width, dtypes)
    why_not = backend.unavailable()
    if why_not:
        result["error"] = f"unavailable: {why_not}"
        return result
    why_not = case.sizes.why_not(height, width)
    if why_not:
        result["error"] = f"size {height}x{width} not accepted: {why_not}"
        return result
    sync = device_synchronizer(backend)
    target = case.deploy_target(height, width, dtypes)
    feed = make_feed(case, height, width, 1, settings.seed, dtypes)

    exports_before = STATS.exports
    artifact_seconds, runner = timed(lambda: backend.factory(case, target, context), no_sync)
    create_seconds, _ = timed(runner.activate, sync)
    try:
        first_seconds, _ = timed(lambda: runner.infer(feed), sync)
        for _ in range(settings.warmup):
            runner.infer(feed)
        warm = [timed(lambda: runner.infer(feed), sync)[0] for _ in range(settings.runs)]
        result["cold"] = {"artifact_seconds": artifact_seconds, "exported": STATS.exports > exports_before,
                          "create_seconds": create_seconds, "first_infer_seconds": first_seconds}
        result["warm"] = {"batch": 1, "warmup_runs": settings.warmup, **latency_stats(warm)}
        result["throughput"] = _throughput(case, runner, height, width, dtypes, settings, sync)
    finally:
        runner.deactivate()
    return result


def _throughput(case, runner, height, width, dtypes, settings: BenchSettings, sync) -> list:
    rows = []
    for batch in settings.batches:
        if batch > case.max_batch:
            continue
        feed = make_feed(case, height, width, batch, settings.seed, dtypes)
        for _ in range(settings.throughput_warmup):
            runner.infer(feed)
        stats = latency_stats([timed(lambda: runner.infer(feed), sync)[0] for _ in range(settings.throughput_runs)])
        rows.append({"batch": batch, "runs": stats["runs"], "median_ms": stats["median_ms"],
                     "images_per_second": batch / (stats["median_ms"] / 1000.0)})
    return rows
