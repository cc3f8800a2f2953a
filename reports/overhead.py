"""Harness overhead: how much of a run's time was spent inside backend inference calls.

Everything else (drawing examples, building feeds, comparing, exporting, starting
runners, pytest itself) is the harness's cost. Every process that runs checks
(the single process, or each xdist worker) measures its own figures; a parallel run
adds them up, so the ratio is per unit of worker time, not of the run's wall clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class ProcessTimes:
    wall_seconds: float = 0.0  # from the process's configure to its session end
    inference_seconds: float = 0.0  # inside Runner.infer, reference and candidates
    inference_calls: int = 0
    exports: int = 0
    export_cache_hits: int = 0
    export_seconds: float = 0.0
    export_rebuilt: list = field(default_factory=list)  # cache entries not trusted, and why

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def total(cls, parts) -> "ProcessTimes":
        total = cls()
        for part in parts:
            for name, value in asdict(part).items():
                setattr(total, name, getattr(total, name) + value)
        return total


def measure_process(pool, started: float, now: float) -> ProcessTimes:
    """This process's figures (pool: the session's RunnerPool, or None when no check ran)."""
    from deploy_parity.export.onnx_exporter import STATS

    return ProcessTimes(
        wall_seconds=now - started,
        inference_seconds=pool.inference_seconds() if pool else 0.0,
        inference_calls=pool.inference_calls() if pool else 0,
        exports=STATS.exports,
        export_cache_hits=STATS.cache_hits,
        export_seconds=STATS.export_seconds,
        export_rebuilt=list(STATS.rebuilt),
    )


def overhead_figures(wall_seconds: float, checking: ProcessTimes, workers: int) -> dict:
    """The figures run.json, the terminal and the HTML report show.

    wall_per_backend_second: process time per second inside backends (1.0 would be a
    harness that costs nothing; 3.0 means two thirds of the time is the harness's).
    """
    process_seconds = checking.wall_seconds if workers else wall_seconds
    inside = checking.inference_seconds
    return {
        "wall_seconds": round(wall_seconds, 2),
        "process_seconds": round(process_seconds, 2),
        "inference_seconds": round(inside, 4),  # one-thread CPU inferences take ~1 ms
        "inference_calls": checking.inference_calls,
        "workers": workers,
        "wall_per_backend_second": round(process_seconds / inside, 2) if inside > 0 else None,
        "backend_share": round(inside / process_seconds, 4) if process_seconds > 0 else None,
    }


def format_overhead(figures: dict) -> str:
    inside = figures["inference_seconds"]
    if figures["workers"]:
        where = (f"wall {figures['wall_seconds']:.1f}s on {figures['workers']} xdist workers "
                 f"({figures['process_seconds']:.1f}s of worker time)")
    else:
        where = f"wall {figures['wall_seconds']:.1f}s"
    if figures["wall_per_backend_second"] is None:
        return f"{where}; no time inside backends"
    return (f"{where}, inside backends {inside:.1f}s: harness overhead ratio "
            f"{figures['wall_per_backend_second']:.2f} ({figures['backend_share']:.0%} of the time inside backends)")
