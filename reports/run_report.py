"""Everything written about a run: while it runs, run.json and index.html say it is in
progress and how far it got (`write_progress`); at its end, from its records, run.json,
the history's verdict on the run (complete or failed, regressions), the pictures, the
HTML page (`write_run_reports`).

Called by the process that owns the run (the single pytest process, or the xdist
controller after merging its workers' records). Every file is written to a temporary
name and renamed into place, so a reader (or a kill) never meets half of one. A file
that cannot be written is a problem in WrittenReports.problems, never an exception:
the plugin turns problems into one error line and a non-zero exit status.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from reports.answers import PICTURE_VERDICTS, pictured_records
from reports.history import HistoryStore, RunIdentity, utc_now, worst_by_group
from reports.html import Picture, ReportPage, write_page, write_progress_page, write_status_page
from reports.metrics import ERROR_METRICS, worst_errors
from reports.regressions import find_regressions
from reports.summary import summarise

TREND_RUNS = 30  # complete runs drawn in the trend figure
RECENT_RUNS = 10  # runs listed in the report's history table


@dataclass
class RunOutcome:
    """How the session ended, as the plugin saw it."""

    exit_status: int
    status: str  # "complete" | "failed" | "interrupted" (run.json; the history says "failed" for both)
    overhead: dict  # deploy_parity.benchmarks.process.overhead_figures
    exports: dict  # exports, export_cache_hits, export_seconds, export_rebuilt, engine_builds, engine_cache_hits, engine_build_seconds
    status_reason: str = ""  # why a run is not complete, in words
    problems: list = field(default_factory=list)  # report-writing problems met during the run

    @property
    def history_status(self) -> str:
        return "complete" if self.status == "complete" else "failed"


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
    pictures_rerun: int = 0  # drawn by running the case again (nothing kept for it)
    seconds: float = 0.0  # spent writing all of this, at session end


def write_json(path: Path, data) -> None:
    """`data` as JSON at `path`, atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def running_summary(identity: RunIdentity, records_count: int, verdicts: Counter, history_db: Optional[str]) -> dict:
    """run.json while the run is in progress."""
    return {
        "status": "running",
        "status_reason": "in progress (or killed before its end, if its process is gone)",
        "run_uid": identity.uid,
        "pid": identity.pid or os.getpid(),
        "started_at": identity.started_at,
        "updated_at": utc_now(),
        "hypothesis_profile": identity.hypothesis_profile,
        "command": identity.command,
        "cases": records_count,
        "verdicts": dict(verdicts),
        "results": "results.jsonl",
        "history": {"db": history_db},
    }


def write_progress(directory: Path, identity: RunIdentity, records_count: int, verdicts: Counter,
                   html: bool = True) -> None:
    """run.json (status 'running', cases so far) and the in-progress index.html. Raises OSError."""
    run = running_summary(identity, records_count, verdicts, identity.db_path)
    write_json(Path(directory) / "run.json", run)
    if html:
        write_progress_page(run, Path(directory))


def _history(store: HistoryStore, identity: RunIdentity, outcome: RunOutcome, records: list) -> dict:
    store.finish_run(identity.uid, outcome.history_status, outcome.exit_status, outcome.overhead["wall_seconds"],
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
    return sorted(pictured_records(records).values(), key=lambda i: picture_priority(records[i], i))


def picture_priority(record: dict, index: int) -> tuple:
    """Sort key of a record worth a picture: failures first, then the larger error, then the earlier."""
    values = [v for v in worst_errors(record).values() if v is not None]
    rank = PICTURE_VERDICTS.index(record["verdict"]) if record["verdict"] in PICTURE_VERDICTS else len(PICTURE_VERDICTS)
    return rank, -(max(values) if values else 0.0), index


def _pictures(records: list, directory: Path, cap: int, registry, backends: dict, make_pool: Callable,
              kept_answers) -> tuple:
    """kept_answers: record index -> KeptAnswers (a dict, or reports.answers.StoredAnswers)."""
    wanted = _picture_order(records)
    for stale in (directory / "images").glob("case-*.png"):  # an earlier run's pictures
        stale.unlink()
    pictures, pool, rerun = [], None, 0
    for count, index in enumerate(wanted[:cap]):
        record = records[index]
        name = f"images/case-{count:03d}.png"
        try:
            case, backend = registry.get(record["model"]), backends[record["backend"]]
        except Exception as error:  # noqa: BLE001 - a case the registry no longer knows
            pictures.append(Picture(index, None, f"no picture: {error}"))
            continue
        kept = kept_answers.get(index)
        if kept is None and pool is None:  # nothing kept (beyond the bound, or not storable): run it again
            pool = make_pool()
        why_not = _render_case(record, case, backend, pool, directory / name, kept=kept)
        rerun += kept is None
        caption = f"{record['check']} {record['model']} on {record['backend']}, {record['height']}x{record['width']}"
        pictures.append(Picture(index, None if why_not else name, why_not or caption))
    if pool is not None:
        pool.close()
    return pictures, max(0, len(wanted) - cap), rerun


def _render_case(*args, **kwargs):
    from reports.overlays import render_case  # imports matplotlib: only when a picture is due

    return render_case(*args, **kwargs)


def _bench(directory: Path, name: str = "bench.json") -> Optional[dict]:
    path = directory / name
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def write_run_reports(*, directory: Path, records: list, identity: RunIdentity, outcome: RunOutcome,
                      environment: Callable[[], dict], picture_cap: int, registry, backends: dict,
                      make_pool: Callable, html: bool = True, workers: list = (),
                      kept_answers: Optional[dict] = None, parts: Optional[dict] = None) -> WrittenReports:
    """workers: per xdist worker, {"id", "gpu", "torch_threads", "cases"} (empty without xdist).
    kept_answers: record index -> what its check compared (deploy_parity.check.KeptAnswers);
    pictures are drawn from these, and only a record without them is re-run (make_pool).
    parts: run.json entries of a sharded run: {"shard": this shard's plan} (--shard K/N), or
    {"shards": [...]} for a run merged from shards (reports/merge.py).

    Never raises for a file it cannot write: each is a problem in the result. When one
    is met after the history said 'complete', the history run is marked 'failed' and
    run.json is rewritten to say why (if it can be)."""
    start = time.perf_counter()
    directory = Path(directory)
    rows = summarise(records)
    written = WrittenReports(rows=rows, run={}, problems=list(outcome.problems))
    if written.problems and outcome.status == "complete":
        outcome.status, outcome.status_reason = "failed", "reports could not be written: " + written.problems[0]
    history: dict = {}
    if identity.db_path is not None:
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
    try:
        env = environment()
    except Exception as error:  # noqa: BLE001 - a machine description is not worth losing the reports
        env = {"error": f"{type(error).__name__}: {error}"}
    run = {
        # The keys run.json always had, first.
        "wall_seconds": outcome.overhead["wall_seconds"],
        "inference_seconds": outcome.overhead["inference_seconds"],
        "inference_calls": outcome.overhead["inference_calls"],
        **outcome.exports,
        "cases": len(records),
        "verdicts": dict(sorted(Counter(r.get("verdict") for r in records).items())),
        "rows": rows,
        "overhead": outcome.overhead,
        "status": outcome.status,
        "status_reason": outcome.status_reason,
        "exit_status": outcome.exit_status,
        "run_uid": identity.uid,
        "pid": identity.pid or os.getpid(),
        "started_at": identity.started_at,
        "finished_at": utc_now(),
        "hypothesis_profile": identity.hypothesis_profile,
        "command": identity.command,
        "results": "results.jsonl",
        "environment": env,
        "workers": list(workers),
        "history": {k: history[k] for k in ("db", "run_id", "baseline_run_ids", "regressions") if k in history},
        **(parts or {}),
    }
    written.run = run
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / "run.json", run)
    except Exception as error:  # noqa: BLE001 - said once at the end, never a verdict
        written.problems.append(f"{directory / 'run.json'}: {type(error).__name__}: {error}")
    if html:
        _write_html(written, directory, records, rows, run, history, picture_cap, registry, backends, make_pool,
                    kept_answers if kept_answers is not None else {})
    if written.problems:
        _settle_failed(written, identity, outcome, directory, html, records)
    written.seconds = time.perf_counter() - start
    return written


def _settle_failed(written: WrittenReports, identity: RunIdentity, outcome: RunOutcome, directory: Path,
                   html: bool, records: list) -> None:
    """Reports could not all be written: whatever could be must say the run failed and
    why, and none may be left claiming otherwise. The history run is marked failed;
    run.json is rewritten (whole, else a minimal one); index.html, if the page could not
    be written, becomes a minimal page saying so."""
    if written.run.get("status") == "complete":
        written.run.update(status="failed", status_reason="reports could not be written: " + written.problems[0])
    written.run["report_problems"] = list(written.problems)
    if identity.db_path is not None:
        try:
            store = HistoryStore(Path(identity.db_path))
            try:
                store.finish_run(identity.uid, "failed", outcome.exit_status, outcome.overhead["wall_seconds"],
                                 outcome.overhead["inference_seconds"])
            finally:
                store.close()
        except Exception:  # noqa: BLE001 - already said: the first problem is the one to fix
            pass
    minimal = {key: written.run.get(key) for key in ("status", "status_reason", "exit_status", "run_uid", "pid",
                                                        "started_at", "finished_at", "cases", "report_problems")}
    minimal["verdicts"] = dict(Counter(r.get("verdict") for r in records))
    for data in (written.run, minimal):
        try:
            write_json(directory / "run.json", data)
            break
        except Exception:  # noqa: BLE001 - as above
            continue
    if html and written.html is None:
        try:
            write_status_page(minimal, directory)
        except Exception:  # noqa: BLE001 - as above
            pass


def _write_html(written, directory, records, rows, run, history, picture_cap, registry, backends, make_pool,
                kept_answers):
    try:
        from reports.plots import error_histogram, trend_plot

        page = ReportPage(run=run, rows=rows, records=records, history=history, bench=_bench(directory),
                          overhead_bench=_bench(directory, "overhead.json"))
        page.pictures, page.pictures_left_out, written.pictures_rerun = _pictures(
            records, directory, picture_cap, registry, backends, make_pool, kept_answers)
        if error_histogram(records, directory / "images" / "errors.svg"):
            page.histogram = "images/errors.svg"
        if history.get("trend_points") and trend_plot(history["trend_points"], directory / "images" / "trend.svg"):
            page.trend = "images/trend.svg"
        written.html = write_page(page, directory)
        written.pictures = sum(p.file is not None for p in page.pictures)
    except Exception as error:  # noqa: BLE001 - say why, keep the run's other reports and exit status
        where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        at = f" (at {Path(where.filename).name}:{where.lineno})" if where else ""
        written.problems.append(f"{directory / 'index.html'}: {type(error).__name__}: {error}{at}")
    return written
