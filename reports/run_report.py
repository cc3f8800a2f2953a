"""Everything written at the end of a run, from its records: run.json, the history's
verdict on the run (complete or failed, regressions), the pictures, the HTML page.

Called once per session by the process that owns the run (the single pytest process,
or the xdist controller after merging its workers' records). Never on the hot path.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from reports.history import HistoryStore, RunIdentity, utc_now, worst_by_group
from reports.html import Picture, ReportPage, write_page
from reports.metrics import ERROR_METRICS, worst_errors
from reports.regressions import find_regressions
from reports.summary import summarise

PICTURE_VERDICTS = ("fail", "ambiguous")
TREND_RUNS = 30  # complete runs drawn in the trend figure
RECENT_RUNS = 10  # runs listed in the report's history table


@dataclass
class RunOutcome:
    """How the session ended, as the plugin saw it."""

    exit_status: int
    status: str  # "complete" | "failed"
    overhead: dict  # reports.overhead.overhead_figures
    exports: dict  # exports, export_cache_hits, export_seconds


@dataclass
class WrittenReports:
    """What the terminal summary prints about the reports."""

    rows: list
    run: dict
    html: Optional[Path] = None
    regressions: list = field(default_factory=list)
    baseline_run_ids: list = field(default_factory=list)
    run_id: Optional[int] = None
    problems: list = field(default_factory=list)  # a report that could not be written, and why
    pictures: int = 0
    seconds: float = 0.0  # spent writing all of this, at session end


def _history(store: HistoryStore, identity: RunIdentity, outcome: RunOutcome, records: list) -> dict:
    store.finish_run(identity.uid, outcome.status, outcome.exit_status, outcome.overhead["wall_seconds"],
                     outcome.overhead["inference_seconds"])
    run_id = store.run_id(identity.uid)
    current = worst_by_group(records)
    baselines = store.baselines(run_id, list(current), identity.hypothesis_profile)
    regressions = find_regressions(current, baselines)
    # Trend: this run's groups over the last complete runs with the same profile.
    by_run = store.group_worst(profile=identity.hypothesis_profile)
    trend_runs = sorted(by_run)[-TREND_RUNS:]
    points: dict = {}
    for group in current:
        for metric in ERROR_METRICS:
            series = [(run, by_run[run][group][metric]) for run in trend_runs
                      if group in by_run[run] and by_run[run][group][metric] is not None]
            if series:
                points[(*group, metric)] = series
    return {
        "db": str(store.path),
        "run_id": run_id,
        "baseline_run_ids": sorted({run for run, _ in baselines.values()}),
        "regressions": [r.as_dict() for r in regressions],
        "recent_runs": store.runs(RECENT_RUNS),
        "trend_points": points,
    }


def _picture_order(records: list) -> list:
    """Indices of the records worth a picture, most telling first: failures before
    ambiguous cases, larger errors first; a case Hypothesis replayed (same size, batch,
    dtypes, seed) only once."""
    seen, wanted = set(), []
    for index, record in enumerate(records):
        key = (record["check"], record["model"], record["backend"], record["precision"], record["height"],
               record["width"], record["batch"], tuple(record["dtypes"]), record["seed"])
        if record["verdict"] in PICTURE_VERDICTS and key not in seen:
            seen.add(key)
            wanted.append(index)

    def worst(index):
        values = [v for v in worst_errors(records[index]).values() if v is not None]
        return max(values) if values else 0.0

    return sorted(wanted, key=lambda i: (PICTURE_VERDICTS.index(records[i]["verdict"]), -worst(i), i))


def _pictures(records: list, directory: Path, cap: int, registry, backends: dict, make_pool: Callable) -> tuple:
    wanted = _picture_order(records)
    for stale in (directory / "images").glob("case-*.png"):  # an earlier run's pictures
        stale.unlink()
    pictures, pool = [], None
    for count, index in enumerate(wanted[:cap]):
        record = records[index]
        name = f"images/case-{count:03d}.png"
        try:
            case, backend = registry.get(record["model"]), backends[record["backend"]]
        except Exception as error:  # noqa: BLE001 - a case the registry no longer knows
            pictures.append(Picture(index, None, f"no picture: {error}"))
            continue
        if pool is None:
            pool = make_pool()
        why_not = _render_case(record, case, backend, pool, directory / name)
        caption = f"{record['check']} {record['model']} on {record['backend']}, {record['height']}x{record['width']}"
        pictures.append(Picture(index, None if why_not else name, why_not or caption))
    if pool is not None:
        pool.close()
    return pictures, max(0, len(wanted) - cap)


def _render_case(*args, **kwargs):
    from reports.overlays import render_case  # imports matplotlib: only when a picture is due

    return render_case(*args, **kwargs)


def _bench(directory: Path) -> Optional[dict]:
    path = directory / "bench.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def write_run_reports(*, directory: Path, records: list, identity: Optional[RunIdentity], outcome: RunOutcome,
                      environment: Callable[[], dict], picture_cap: int, registry, backends: dict,
                      make_pool: Callable, html: bool = True, workers: list = ()) -> WrittenReports:
    """workers: per xdist worker, {"id", "gpu", "torch_threads", "cases"} (empty without xdist)."""
    start = time.perf_counter()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = summarise(records)
    written = WrittenReports(rows=rows, run={})
    history: dict = {}
    if identity is not None:
        try:
            store = HistoryStore(Path(identity.db_path))
            try:
                history = _history(store, identity, outcome, records)
            finally:
                store.close()
        except Exception as error:  # noqa: BLE001 - the history must never cost the run its reports
            written.problems.append(f"history {identity.db_path}: {type(error).__name__}: {error}")
    written.run_id = history.get("run_id")
    written.regressions = history.get("regressions", [])
    written.baseline_run_ids = history.get("baseline_run_ids", [])
    run = {
        # The keys run.json always had, first.
        "wall_seconds": outcome.overhead["wall_seconds"],
        "inference_seconds": outcome.overhead["inference_seconds"],
        "inference_calls": outcome.overhead["inference_calls"],
        **outcome.exports,
        "cases": len(records),
        "rows": rows,
        "overhead": outcome.overhead,
        "status": outcome.status,
        "exit_status": outcome.exit_status,
        "started_at": identity.started_at if identity else None,
        "finished_at": utc_now(),
        "hypothesis_profile": identity.hypothesis_profile if identity else None,
        "command": identity.command if identity else None,
        "environment": environment(),
        "workers": list(workers),
        "history": {k: history[k] for k in ("db", "run_id", "baseline_run_ids", "regressions") if k in history},
    }
    written.run = run
    (directory / "run.json").write_text(json.dumps(run, indent=1, default=str))
    if html:
        _write_html(written, directory, records, rows, run, history, picture_cap, registry, backends, make_pool)
    written.seconds = time.perf_counter() - start
    return written


def _write_html(written, directory, records, rows, run, history, picture_cap, registry, backends, make_pool):
    try:
        from reports.plots import error_histogram, trend_plot

        page = ReportPage(run=run, rows=rows, records=records, history=history, bench=_bench(directory))
        page.pictures, page.pictures_left_out = _pictures(records, directory, picture_cap, registry, backends,
                                                          make_pool)
        if error_histogram(records, directory / "images" / "errors.png"):
            page.histogram = "images/errors.png"
        if history.get("trend_points") and trend_plot(history["trend_points"], directory / "images" / "trend.png"):
            page.trend = "images/trend.png"
        written.html = write_page(page, directory)
        written.pictures = sum(p.file is not None for p in page.pictures)
    except Exception as error:  # noqa: BLE001 - say why, keep the run's other reports and exit status
        written.problems.append(f"HTML report: {type(error).__name__}: {error}\n{traceback.format_exc(limit=4)}")
    return written
