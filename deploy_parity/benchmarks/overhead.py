"""How much of a parity run is the harness's own time, and how its judging compares with Polygraphy's.

    python -m deploy_parity.benchmarks.overhead                       # default zoo, ci profile, 3 warm runs
    python -m deploy_parity.benchmarks.overhead --model tv-fcos --runs 2 --reports-dir reports/output
    python -m deploy_parity.benchmarks.overhead --against 870d331     # before/after, runs interleaved

Two measurements, written to <reports dir>/overhead.json (the HTML report shows the
latest) and printed as tables:

1. Runs: the parity suite run in fresh pytest processes, once with an empty export
   cache (cold) and --runs times on the warm cache. Each run's own run.json gives the
   overhead ratio (process seconds per second inside backends), seconds per case by
   phase (render, activate, infer, compare, record, other) and reuse (feeds rendered vs
   distinct, runner activations vs distinct artifacts). With --against REV the runs
   alternate between a git worktree of REV ("before") and this tree ("now"), each with
   its own export cache, a cold pair then --runs warm pairs, so machine load hits both
   sides alike; each run also gets a digest of every case's verdict (same digest: the
   same cases and verdicts).
2. Judging (P4): on the same feeds (the first --feeds examples of the ci profile's size
   range, batch 1) the reference and the candidate run once each; then the harness's
   comparators (matched instances: boxes, keypoints, masks) and Polygraphy's
   Comparator.compare_accuracy with SimpleCompareFunc (element-wise, the tolerance
   table's fp32 corner limit as atol) judge the same outputs. Polygraphy compares raw
   tensors element by element, so instance order or count differences are mismatches
   to it; the figure is the time each takes, not a verdict comparison.

A benchmark, never a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from deploy_parity.records import verdict_digest

ROOT = Path(__file__).resolve().parents[2]


def run_suite(models: list, reports_dir: Path, cache_dir: Path, profile: str, extra: list,
              tree: Path = ROOT) -> dict:
    """One pytest process over `models` in `tree` (this repository, or a worktree of
    another commit); its run.json's figures plus the wall clock seen from outside."""
    command = [sys.executable, "-m", "pytest", "suites", "-q", "-p", "no:cacheprovider", "--hypothesis-profile",
               profile, "--reports-dir", str(reports_dir), "--report-images", "0", *extra]
    if models:
        command += ["--model", ",".join(models)]
    env = {**os.environ, "PARITY_CACHE_DIR": str(cache_dir)}
    if tree != ROOT:  # that tree's deploy_parity, not the one installed from this tree
        env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
    start = time.perf_counter()
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    run = json.loads((reports_dir / "run.json").read_text())
    overhead = run.get("overhead", {})
    return {"exit_status": done.returncode, "outside_wall_seconds": round(wall, 2),
            "overhead_ratio": overhead.get("wall_per_backend_second"), "cases": run.get("cases"),
            "inference_seconds": overhead.get("inference_seconds"), "wall_seconds": overhead.get("wall_seconds"),
            "phases": overhead.get("phases"), "reuse": overhead.get("reuse"),
            "verdicts": run.get("verdicts"), "verdict_digest": verdict_digest(reports_dir / "results.jsonl"),
            "command": " ".join(command[1:])}


@contextlib.contextmanager
def worktree_of(rev: str, where: Path):
    """A detached git worktree of `rev` at `where`, removed afterwards."""
    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)

    if git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").returncode != 0:
        raise SystemExit(f"--against {rev!r}: not a commit of {ROOT}")
    added = git("worktree", "add", "--detach", "--force", str(where), rev)
    if added.returncode != 0:
        raise SystemExit(f"--against {rev!r}: git worktree add failed: {added.stderr.strip()}")
    try:
        yield where
    finally:
        git("worktree", "remove", "--force", str(where))


def judging_comparison(case_names: list, backend_name: str, feeds: int, cache_dir=None) -> list:
    """Per case: seconds for the harness's comparators and for Polygraphy's Comparator on the same outputs."""
    from polygraphy.comparator import Comparator, IterationResult, RunResults, SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR  # its per-output statistics lines would be timed too

    from deploy_parity.backends import BACKENDS, RunnerContext
    from deploy_parity.compare.case_outputs import compare_case_outputs
    from deploy_parity.compare.tolerances import lookup
    from deploy_parity.compare.verdict import combine
    from deploy_parity.pool import RunnerPool
    from deploy_parity.registry import build_registry
    from deploy_parity.strategies import ParityExample

    import torch

    torch.set_num_threads(1)
    backend = BACKENDS[backend_name]
    registry = build_registry(wanted=case_names)
    cache = Path(cache_dir or os.environ.get("PARITY_CACHE_DIR") or ROOT / ".parity_cache")
    pool = RunnerPool(RunnerContext(cache_dir=cache))
    rows = []
    try:
        for case in registry.select(case_names):
            # What the artifact takes (a fixed-size graph: its one size), else the smallest
            # sides it takes, every pair within its aspect limit: squares and rectangles.
            bounds = pool.bounds(case, backend)
            if bounds.fixed_height is not None:
                sizes = [(bounds.fixed_height, bounds.fixed_width)]
            else:
                step = bounds.multiple_of
                sides = list(range(-(-bounds.min_side // step) * step, bounds.max_side + 1, step))[:5]
                sizes = [(h, w) for h in sides for w in sides if max(h, w) <= bounds.max_aspect * min(h, w)]
            pairs = []
            for index in range(feeds):
                height, width = sizes[index % len(sizes)]
                example = ParityExample(height, width, 1, case.default_dtypes(), index)
                feed = pool.feed(case, example)
                target = case.deploy_target(height, width, example.dtypes)
                pairs.append((example, pool.reference(case).infer(feed), pool.get(case, backend, target).infer(feed)))
            start = time.perf_counter()
            verdicts = []
            for example, reference, candidate in pairs:
                comparisons = compare_case_outputs(case, reference, candidate, backend=backend.name,
                                                   precision=backend.precision,
                                                   image_size=(example.height, example.width), batch=1)
                verdicts.append(combine(c.verdict for c in comparisons).value)
            harness_seconds = time.perf_counter() - start
            atol = lookup("boxes", backend.name, backend.precision)["corner_px"]
            results = RunResults()
            results.append(("reference", [IterationResult(outputs=r, runner_name="reference") for _, r, _ in pairs]))
            results.append((backend.name, [IterationResult(outputs=c, runner_name=backend.name) for _, _, c in pairs]))
            start = time.perf_counter()
            accuracy = Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(atol=atol, rtol=atol))
            polygraphy_seconds = time.perf_counter() - start
            rows.append({"model": case.name, "backend": backend.name, "feeds": len(pairs),
                         "harness_seconds": round(harness_seconds, 4), "polygraphy_seconds": round(polygraphy_seconds, 4),
                         "harness_vs_polygraphy": round(harness_seconds / polygraphy_seconds, 2)
                         if polygraphy_seconds else None,
                         "polygraphy_passed": bool(accuracy), "harness_verdicts": sorted(set(verdicts))})
    finally:
        pool.close()
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deploy_parity.benchmarks.overhead",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME[,NAME]", help="default: the default run")
    parser.add_argument("--profile", default="ci", help="Hypothesis profile of the runs (default ci)")
    parser.add_argument("--runs", type=int, default=3, help="warm runs after the cold one")
    parser.add_argument("--no-cold", action="store_true",
                        help="skip the cold run (keeps the export cache; not with --against)")
    parser.add_argument("--feeds", type=int, default=20, help="feeds per case for the judging comparison")
    parser.add_argument("--judging-backend", default="onnxrt-cpu")
    parser.add_argument("--reports-dir", default=os.environ.get("PARITY_REPORTS_DIR", str(ROOT / "reports" / "output")))
    parser.add_argument("--cache-dir", default=os.environ.get("PARITY_CACHE_DIR", str(ROOT / ".parity_cache")))
    parser.add_argument("--pytest-arg", action="append", default=[], help="passed to each pytest run")
    parser.add_argument("--against", metavar="REV",
                        help="alternate every run with the same run of git commit REV (before/after)")
    return parser.parse_args(argv)


def _phase_line(run: dict) -> str:
    per_case = (run.get("phases") or {}).get("ms_per_case") or {}
    from deploy_parity.benchmarks.process import PHASE_COLUMNS

    return " / ".join(f"{per_case.get(k, 0):.1f}" for k in PHASE_COLUMNS)


def format_tables(result: dict) -> str:
    lines = ["| run | wall s | overhead ratio | cases | ms per case: render / activate / infer / compare / record / "
             "other | feeds rendered / distinct / used | activations / artifacts | verdicts |",
             "|---|---|---|---|---|---|---|---|"] if result["runs"] else []
    for run in result["runs"]:
        reuse = run.get("reuse") or {}
        lines.append(f"| {run['label']} | {run['outside_wall_seconds']} | {run['overhead_ratio']} | {run['cases']} | "
                     f"{_phase_line(run)} | {reuse.get('feeds_rendered')} / {reuse.get('feeds_distinct')} / "
                     f"{reuse.get('feeds_served')} | {reuse.get('runner_activations')} / "
                     f"{reuse.get('distinct_artifacts')} | {run.get('verdict_digest')} |")
    if result.get("judging"):
        lines += ["" if lines else None, "| model | backend | feeds | harness s | Polygraphy Comparator s | ratio | harness verdicts | "
                  "Polygraphy passed |", "|---|---|---|---|---|---|---|---|"]
        for row in result["judging"]:
            lines.append(f"| {row['model']} | {row['backend']} | {row['feeds']} | {row['harness_seconds']} | "
                         f"{row['polygraphy_seconds']} | {row['harness_vs_polygraphy']} | "
                         f"{','.join(row['harness_verdicts'])} | {row['polygraphy_passed']} |")
    return "\n".join(line for line in lines if line is not None)


def main(argv=None) -> int:
    args = parse_args(argv)
    models = [m.strip() for value in args.model for m in value.split(",") if m.strip()]
    reports = Path(args.reports_dir)
    reports.mkdir(parents=True, exist_ok=True)
    result = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "models": models or "default run",
              "profile": args.profile, "runs": []}
    with tempfile.TemporaryDirectory(prefix="parity-overhead-") as scratch, contextlib.ExitStack() as stack:
        scratch = Path(scratch)
        if args.against:
            # Before and now alternate; each side fills its own cache in the cold pair.
            before = stack.enter_context(worktree_of(args.against, scratch / "before-tree"))
            result["against"] = args.against
            sides = [(f"{args.against} ", before, scratch / "before-cache"), ("now ", ROOT, scratch / "now-cache")]
        else:
            sides = [("", ROOT, None)]
        cold = not args.no_cold or args.against  # with --against the cold pair fills each side's cache
        plan = [(f"{name}cold", tree, cache or scratch / "cold-cache") for name, tree, cache in sides] if cold else []
        plan += [(f"{name}warm {i + 1}", tree, cache or Path(args.cache_dir))
                 for i in range(args.runs) for name, tree, cache in sides]
        for label, tree, cache in plan:
            print(f"[overhead] {label} run ...", flush=True)
            run = run_suite(models, scratch / label.replace(" ", "-"), cache, args.profile, args.pytest_arg, tree)
            run["label"] = label
            result["runs"].append(run)
            print(f"[overhead] {label}: wall {run['outside_wall_seconds']} s, ratio {run['overhead_ratio']}, "
                  f"verdicts {run['verdict_digest']}", flush=True)
    print("[overhead] judging the same feeds with the harness and with Polygraphy's Comparator ...", flush=True)
    from deploy_parity.registry import build_registry

    cases = models or [c.name for c in build_registry(wanted=[]).select(None)]
    result["judging"] = judging_comparison(cases, args.judging_backend, args.feeds, args.cache_dir)
    path = reports / "overhead.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(format_tables(result))
    print(f"[overhead] written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
