"""The bench phase: `python -m deploy_parity.benchmarks.latency`, one process per (model, backend) pair (a
true cold start each), CUDA backends first, the comparison backend while time is left; no
pair is started that the deadline would cut. -> bench/bench.json, bench/pairs/*.json"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

from .files import tail, write_json


def bench_phase(run) -> None:
    plan = run.plan
    pairs_dir = run.out / "bench" / "pairs"
    pairs_dir.mkdir(parents=True, exist_ok=True)
    bench = {"pairs": [], "skipped": []}
    run.summary["bench"] = bench
    pairs = [(m, b) for b in plan.bench_backends for m in plan.models]
    pairs += [(m, b) for b in plan.comparison_backends for m in plan.models]
    reserve = 8
    for model, backend in pairs:
        left = run.remaining() - reserve
        comparison = backend in plan.comparison_backends
        if left < (run.args.min_pair_seconds * (2 if comparison else 1)):
            bench["skipped"].append(f"{model}@{backend}: {left:.0f}s left")
            continue
        output = pairs_dir / f"{model}@{backend}.json"
        command = [sys.executable, "-m", "deploy_parity.benchmarks.latency", "--model", model, "--backend", backend,
                   "--in-process", "--fresh", "--output", str(output),
                   "--cache-dir", str(run.work / "cache-bench"), *plan.bench_args]
        done = run.run_child(command, min(run.args.pair_timeout, left), pairs_dir / f"{model}@{backend}.log")
        entry = {"model": model, "backend": backend, **done}
        try:
            results = json.loads(output.read_text())["results"]
        except (OSError, ValueError, KeyError):
            results = [{"model": model, "backend": backend, "precision": None,
                        "error": ("timed out" if done["timed_out"] else f"exit {done['rc']}") + ": " +
                                 (tail(Path(done["log"]).read_text(errors="replace"), 1) or "no output")}]
        entry["results"] = results
        bench["pairs"].append(entry)
        first = results[0] if results else {}
        if first.get("error"):
            run.log(f"bench: {model}@{backend}: {first['error'][:200]} ({done['seconds']}s)")
        else:
            run.log(f"bench: {model}@{backend}: warm median {first['warm']['median_ms']:.2f} ms, cold first "
                    f"infer {first['cold']['first_infer_seconds'] * 1000:.1f} ms ({done['seconds']}s)")
        write_bench(run)
        run.write_summary()
    if bench["skipped"]:
        run.log(f"bench: skipped for lack of time: {', '.join(bench['skipped'])}")
    write_bench(run)


def write_bench(run) -> None:
    """bench/bench.json: every pair's results in one document, with the first pair's host and settings."""
    bench = run.summary["bench"]
    results = [r for pair in bench["pairs"] for r in pair["results"]]
    host, settings = None, None
    for pair in bench["pairs"]:
        try:
            document = json.loads((run.out / "bench" / "pairs" / f"{pair['model']}@{pair['backend']}.json")
                                  .read_text())
            host, settings = document.get("host"), document.get("settings")
            break
        except (OSError, ValueError):
            continue
    write_json(run.out / "bench" / "bench.json", {
        "created_at": _dt.datetime.now().isoformat(timespec="seconds"), "host": host,
        "settings": {**(settings or {}), "isolated": True, "note": "one process per (model, backend)"},
        "results": results})
