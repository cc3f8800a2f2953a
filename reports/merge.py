"""One report from the shards of a run: `python -m reports.merge --into DIR SHARD_DIR...`.

Each shard (pytest ... --shard K/N --reports-dir SHARD_DIR) wrote its own run.json and
results.jsonl. The merge checks the shards belong together (same N, same plan digest,
same Hypothesis profile, no shard twice), concatenates their records into DIR's
results.jsonl, adds ONE run to the history (one trend point for the night, compared with
the last complete run like any other) and writes DIR's run.json and index.html; each
shard's own report is copied under DIR/shards/shard-K/ and linked from the page.

A missing or unfinished shard does not stop the merge: the merged run says which, is
'failed', and the command exits 1, so the night is red and its report still shows what
ran. Shards that do not belong together are refused (exit 2, one line each).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

from reports.history import HistoryStore, RunIdentity
from deploy_parity.records import read_jsonl
from reports.jsonl import write_jsonl

# What a shard directory holds that the merged report does not copy: the history is
# merged as records, its run rows belong to the shard's own machine.
_NOT_COPIED = ("history.sqlite", "history.sqlite-wal", "history.sqlite-shm")


class MergeError(Exception):
    """Shards that cannot be merged; the message is one line naming the shard and why."""


def read_shard(directory: Path) -> dict:
    """{"dir", "run", "records"} of one shard's reports, or MergeError naming what is wrong."""
    directory = Path(directory)
    run_path = directory / "run.json"
    try:
        run = json.loads(run_path.read_text())
    except FileNotFoundError:
        raise MergeError(f"{directory}: no run.json (did the shard's pytest run start? is this its --reports-dir?)")
    except (OSError, ValueError) as error:
        raise MergeError(f"{run_path}: not readable JSON ({type(error).__name__}: {error})")
    shard = run.get("shard")
    if not isinstance(shard, dict) or not {"index", "count", "plan_digest", "units"} <= set(shard):
        raise MergeError(f"{run_path}: not a shard's run (no 'shard' entry: was it run with --shard K/N?)")
    results = directory / (run.get("results") or "results.jsonl")
    try:
        records = [r for r in read_jsonl(results) if r.get("run") == run.get("run_uid")] if results.is_file() else []
    except ValueError as error:
        raise MergeError(f"{results}: a line is not JSON ({error})")
    return {"dir": directory, "run": run, "records": records}


def check_together(shards: list) -> tuple:
    """(count, problems): shards of one plan and profile, each index once. Raises MergeError
    for shards that do not belong together; returns the missing/unfinished ones as problems."""
    if not shards:
        raise MergeError("no shard directories given")
    first = shards[0]["run"]
    count, digest = first["shard"]["count"], first["shard"]["plan_digest"]
    seen: dict = {}
    for shard in shards:
        run, where = shard["run"], shard["dir"]
        part = run["shard"]
        if part["count"] != count:
            raise MergeError(f"{where}: shard {part['index']}/{part['count']} is not one of {count} shards "
                             f"({shards[0]['dir']} is {first['shard']['index']}/{count})")
        if part["plan_digest"] != digest:
            raise MergeError(f"{where}: planned differently (plan {part['plan_digest']}, {shards[0]['dir']} has "
                             f"{digest}): the shards read different histories or ran other cases/backends; "
                             "give every shard the same history file and the same --model/--backend")
        if run.get("hypothesis_profile") != first.get("hypothesis_profile"):
            raise MergeError(f"{where}: Hypothesis profile {run.get('hypothesis_profile')!r}, "
                             f"{shards[0]['dir']} ran {first.get('hypothesis_profile')!r}")
        if part["index"] in seen:
            raise MergeError(f"{where}: shard {part['index']}/{count} given twice (also {seen[part['index']]})")
        seen[part["index"]] = where
    problems = [f"shard {k}/{count} missing: no reports from it (did its job run?)"
                for k in range(1, count + 1) if k not in seen]
    for shard in shards:
        run = shard["run"]
        if run.get("status") != "complete":
            problems.append(f"shard {run['shard']['index']}/{count} {run.get('status')}: "
                            f"{run.get('status_reason') or 'no reason given'}")
    return count, problems


def _combined_overhead(runs: list) -> dict:
    """The night's figures: wall is the longest shard (they run side by side), the rest add up."""
    overheads = [r.get("overhead") or {} for r in runs]

    def total(key):
        return sum(o.get(key) or 0 for o in overheads)

    process, inside = total("process_seconds"), total("inference_seconds")
    seconds = Counter()
    cases = 0
    for o in overheads:
        phases = o.get("phases") or {}
        seconds.update(phases.get("seconds") or {})
        cases += phases.get("cases") or 0
    reuse = Counter()
    for o in overheads:
        reuse.update({k: v for k, v in (o.get("reuse") or {}).items() if isinstance(v, (int, float))})
    return {"wall_seconds": max((o.get("wall_seconds") or 0 for o in overheads), default=0.0),
            "process_seconds": round(process, 2), "inference_seconds": round(inside, 4),
            "inference_calls": total("inference_calls"), "workers": 0,
            "wall_per_backend_second": round(process / inside, 2) if inside > 0 else None,
            "backend_share": round(inside / process, 4) if process > 0 else None,
            "phases": {"cases": cases, "seconds": {k: round(v, 3) for k, v in seconds.items()},
                       "ms_per_case": {k: round(1000 * v / cases, 2) for k, v in seconds.items()} if cases else {}},
            "reuse": dict(reuse)}


def _without_shard(command: str) -> str:
    """The shards' common command line: shard 1's without its --shard K/N."""
    import shlex

    words, kept = shlex.split(command), []
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        if word == "--shard":
            skip = True
            continue
        if not word.startswith("--shard="):
            kept.append(word)
    return shlex.join(kept)


def merged_uid(shards: list) -> str:
    """Derived from the shards' run uids: merging the same shards twice is the same run."""
    uids = sorted(s["run"].get("run_uid", "") for s in shards)
    return hashlib.sha256(("merge:" + ",".join(uids)).encode()).hexdigest()[:32]


def merge_shards(directories: list, into: Path, history_db: Optional[str], html: bool = True) -> dict:
    """Write DIR's merged reports; returns the merged run.json. MergeError for shards that do not fit."""
    from reports.run_report import RunOutcome, write_run_reports

    shards = sorted((read_shard(Path(d)) for d in directories), key=lambda s: s["run"]["shard"]["index"])
    count, problems = check_together(shards)
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    runs = [s["run"] for s in shards]
    uid = merged_uid(shards)
    profile = runs[0].get("hypothesis_profile")
    command = _without_shard(runs[0].get("command", "pytest"))
    identity = RunIdentity(db_path=history_db, uid=uid, started_at=min(r.get("started_at") or "" for r in runs),
                           hypothesis_profile=profile, command=f"{command} (merged from {count} shards)", workers=0)
    # The records, shard by shard, as one run: their run uid is the merged run's.
    records = []
    for shard in shards:
        for record in shard["records"]:
            records.append({**record, "run": uid, "shard": shard["run"]["shard"]["index"]})
    write_jsonl(records, into / "results.jsonl")
    environment = runs[0].get("environment") or {}
    if history_db is not None:
        store = HistoryStore(Path(history_db))
        try:
            if store.run_id(uid) is not None:
                raise MergeError(f"{history_db}: these shards were merged into it already (run uid {uid}); "
                                 "the night has one trend point")
            run_id = store.ensure_run(identity, environment)
            for record in records:
                store.record_case(run_id, record, worker=f"shard-{record['shard']}")
        finally:
            store.close()
    parts = []
    for shard in shards:
        run, part = shard["run"], shard["run"]["shard"]
        copy = into / "shards" / f"shard-{part['index']}"
        if copy.resolve() != shard["dir"].resolve():
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(shard["dir"], copy, ignore=shutil.ignore_patterns(*_NOT_COPIED))
        parts.append({"index": part["index"], "count": count, "status": run.get("status"),
                      "exit_status": run.get("exit_status"), "cases": len(shard["records"]),
                      "wall_seconds": (run.get("overhead") or {}).get("wall_seconds"), "units": part["units"],
                      "host": (run.get("environment") or {}).get("host"), "run_uid": run.get("run_uid"),
                      "planned_seconds": part.get("planned_seconds"),
                      "report": f"shards/shard-{part['index']}/index.html"
                      if (copy / "index.html").is_file() else None})
    exit_statuses = [int(r.get("exit_status") or 0) for r in runs]
    exit_status = max(exit_statuses + ([1] if problems else []))
    outcome = RunOutcome(
        exit_status=exit_status,
        status="failed" if problems else "complete",
        status_reason="; ".join(problems),
        overhead=_combined_overhead(runs),
        exports={"exports": sum(r.get("exports") or 0 for r in runs),
                 "export_cache_hits": sum(r.get("export_cache_hits") or 0 for r in runs),
                 "export_seconds": round(sum(r.get("export_seconds") or 0 for r in runs), 2),
                 "export_rebuilt": [x for r in runs for x in r.get("export_rebuilt") or []],
                 "engine_builds": sum(r.get("engine_builds") or 0 for r in runs),
                 "engine_cache_hits": sum(r.get("engine_cache_hits") or 0 for r in runs),
                 "engine_build_seconds": round(sum(r.get("engine_build_seconds") or 0 for r in runs), 2)},
        problems=[],
    )
    written = write_run_reports(directory=into, records=records, identity=identity, outcome=outcome,
                                environment=lambda: environment, picture_cap=0, registry=None, backends={},
                                make_pool=lambda: None, html=html, parts={"shards": parts})
    if written.problems:
        raise MergeError(f"{into}: {written.problems[0]}")
    return written.run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("shards", nargs="+", metavar="SHARD_DIR", help="each shard's --reports-dir")
    parser.add_argument("--into", required=True, metavar="DIR", help="where the merged reports go")
    parser.add_argument("--history-db", default=None, metavar="PATH|off",
                        help="the history the merged run is added to (default DIR/history.sqlite; 'off': none)")
    parser.add_argument("--no-html-report", action="store_true", help="run.json and results.jsonl only")
    args = parser.parse_args(argv)
    history = args.history_db or str(Path(args.into) / "history.sqlite")
    history = None if history.strip().lower() in ("off", "none", "0") else history
    try:
        run = merge_shards(args.shards, Path(args.into), history, html=not args.no_html_report)
    except MergeError as error:
        print(f"reports.merge: {error}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{k} {v}" for k, v in sorted((run.get("verdicts") or {}).items())) or ""
    print(f"merged {len(run['shards'])} of {run['shards'][0]['count'] if run['shards'] else 0} shards into "
          f"{args.into}: {run['cases']} cases, run {run['status']}" + (f" ({run['status_reason']})"
                                                                         if run.get("status_reason") else "")
          + (f"; {counts}" if counts else "") + (f"; history {history}" if history else ""))
    return 0 if run["status"] == "complete" and run["exit_status"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
