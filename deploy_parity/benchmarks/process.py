"""Harness overhead: how much of a run's time was spent inside backend inference calls.

reports/overhead.py words these figures for the terminal and the HTML page.

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
    engine_builds: int = 0  # TensorRT engines built by the trt-* backends, and their cache hits
    engine_cache_hits: int = 0
    engine_build_seconds: float = 0.0
    # Phases of the checks (seconds), besides inference_seconds.
    render_seconds: float = 0.0  # building feeds (scenes drawn once per example: inputs.FeedCache)
    activate_seconds: float = 0.0  # building runners: modules, sessions, the exports they wait for
    compare_seconds: float = 0.0  # the comparators
    record_seconds: float = 0.0  # serialising and writing the records
    cases: int = 0  # records written
    # Reuse: feeds handed out, rendered and distinct; runners activated for how many artifacts.
    feeds_served: int = 0
    feeds_rendered: int = 0
    feeds_distinct: int = 0
    runner_activations: int = 0
    distinct_artifacts: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def total(cls, parts) -> "ProcessTimes":
        total = cls()
        for part in parts:
            for name, value in asdict(part).items():
                setattr(total, name, getattr(total, name) + value)
        return total


def measure_process(pool, started: float, now: float, recorder=None) -> ProcessTimes:
    """This process's figures (pool: the session's RunnerPool, or None when no check ran)."""
    from deploy_parity.backends.tensorrt import engine_cache_totals
    from deploy_parity.export.onnx_exporter import STATS

    reuse = pool.figures() if pool is not None else {}
    return ProcessTimes(
        render_seconds=reuse.get("render_seconds", 0.0),
        activate_seconds=reuse.get("activate_seconds", 0.0),
        compare_seconds=reuse.get("compare_seconds", 0.0),
        record_seconds=getattr(recorder, "record_seconds", 0.0),
        cases=getattr(recorder, "count", 0),
        feeds_served=reuse.get("feeds_served", 0),
        feeds_rendered=reuse.get("feeds_rendered", 0),
        feeds_distinct=reuse.get("feeds_distinct", 0),
        runner_activations=reuse.get("runner_activations", 0),
        distinct_artifacts=reuse.get("distinct_artifacts", 0),
        wall_seconds=now - started,
        inference_seconds=pool.inference_seconds() if pool else 0.0,
        inference_calls=pool.inference_calls() if pool else 0,
        exports=STATS.exports,
        export_cache_hits=STATS.cache_hits,
        export_seconds=STATS.export_seconds,
        export_rebuilt=list(STATS.rebuilt),
        **engine_cache_totals(),
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
        "phases": phase_figures(process_seconds, checking),
        "reuse": {"feeds_served": checking.feeds_served, "feeds_rendered": checking.feeds_rendered,
                  "feeds_distinct": checking.feeds_distinct, "runner_activations": checking.runner_activations,
                  "distinct_artifacts": checking.distinct_artifacts},
    }


# The phases phase_figures reports, in the order every table shows them ("other": the rest of the process).
PHASE_COLUMNS = ("render", "activate", "infer", "compare", "record", "other")


def phase_figures(process_seconds: float, checking: ProcessTimes) -> dict:
    """Seconds per phase, in all and per recorded case; "other" is the rest of the process
    (imports, collection, Hypothesis, pytest, the report). Activation includes the exports
    and engine builds a runner waits for."""
    seconds = {"render": checking.render_seconds, "activate": checking.activate_seconds,
               "infer": checking.inference_seconds, "compare": checking.compare_seconds,
               "record": checking.record_seconds}
    seconds["other"] = max(0.0, process_seconds - sum(seconds.values()))
    cases = checking.cases
    return {"cases": cases,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "ms_per_case": {k: round(1000 * v / cases, 2) for k, v in seconds.items()} if cases else {}}
