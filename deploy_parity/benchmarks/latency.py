"""Latency benchmarks per model case, backend and precision; figures to bench.json.

    python -m deploy_parity.benchmarks.latency --model pose-rtmo --backend onnxrt-cpu,torch-cpu
    python -m deploy_parity.benchmarks.latency --model pose-rtmo --backend torch-cuda-fp32,trt-fp16 --runs 200

For each (model, backend): cold start (factory, session/engine creation, first
inference: each timed apart), warm steady state after discarded warm-up runs (mean,
median, p99), and throughput against batch size. Each pair runs in a fresh Python
process by default, so "cold" means cold: no other runner of the same model has
warmed the allocator or the kernel caches (--in-process to skip that).

Results are merged into <reports dir>/bench.json (default reports/output/, or
PARITY_REPORTS_DIR), replacing earlier figures for the same (model, backend,
precision, size); the HTML report shows them. Never asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from deploy_parity.benchmarks.measure import BenchSettings, measure_backend

DEFAULT_BACKENDS = "torch-cpu,onnxrt-cpu"


def _split(values) -> list:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _size(text: str) -> tuple:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, e.g. 192x320; got {text!r}") from None
    return height, width


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deploy_parity.benchmarks.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME[,NAME]")
    parser.add_argument("--backend", action="append", metavar="NAME[,NAME]", help=f"default {DEFAULT_BACKENDS}")
    parser.add_argument("--model-module", action="append", default=[], metavar="MODULE_OR_PATH")
    parser.add_argument("--size", type=_size, default=None, metavar="HxW",
                        help="input size (default: the case's export size)")
    parser.add_argument("--batches", default="1,2,4,8", help="batch sizes for throughput (capped at the case's max)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up inferences discarded before timing")
    parser.add_argument("--runs", type=int, default=50, help="timed warm inferences")
    parser.add_argument("--throughput-runs", type=int, default=10, help="timed inferences per batch size")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch CPU threads (default 1, as the ONNX Runtime runner uses: comparable figures, "
                             "and no OpenMP oversubscription on a shared machine; 0: torch's default)")
    parser.add_argument("--cache-dir", default=os.environ.get("PARITY_CACHE_DIR"), help="export cache")
    parser.add_argument("--output", default=None, help="bench.json path (default $PARITY_REPORTS_DIR/bench.json, else "
                             "reports/output/bench.json under the current directory, where the HTML report looks)")
    parser.add_argument("--fresh", action="store_true", help="replace bench.json instead of merging into it")
    parser.add_argument("--in-process", action="store_true", help="measure every pair in this process")
    args = parser.parse_args(argv)
    args.model = _split(args.model)
    args.backend = _split(args.backend or [DEFAULT_BACKENDS])
    args.model_module = _split(args.model_module)
    args.batches = tuple(int(b) for b in _split([args.batches]))
    if args.output is None:
        reports = os.environ.get("PARITY_REPORTS_DIR") or Path("reports") / "output"
        args.output = str(Path(reports) / "bench.json")
    return args


def _context(args):
    from deploy_parity.backends import RunnerContext
    from deploy_parity.export.onnx_exporter import DEFAULT_CACHE_DIR

    return RunnerContext(cache_dir=Path(args.cache_dir or DEFAULT_CACHE_DIR))


def measure_in_process(args) -> list:
    from deploy_parity.backends import select_backends
    from deploy_parity.registry import build_registry

    if args.torch_threads > 0:
        import torch

        torch.set_num_threads(args.torch_threads)
    registry = build_registry(args.model_module)
    cases = registry.select(args.model)
    backends = select_backends(args.backend)
    settings = BenchSettings(warmup=args.warmup, runs=args.runs, batches=args.batches,
                             throughput_runs=args.throughput_runs)
    context = _context(args)
    return [measure_backend(case, backend, context, settings, args.size) for case in cases for backend in backends]


def measure_isolated(args) -> list:
    """Every (model, backend) pair in its own process: a cold start per pair."""
    results = []
    for model in args.model:
        for backend in args.backend:
            with tempfile.TemporaryDirectory() as tmp:
                output = Path(tmp) / "bench.json"
                command = [sys.executable, "-m", "deploy_parity.benchmarks.latency", "--model", model, "--backend", backend,
                           "--batches", ",".join(map(str, args.batches)), "--warmup", str(args.warmup),
                           "--runs", str(args.runs), "--throughput-runs", str(args.throughput_runs),
                           "--torch-threads", str(args.torch_threads),
                           "--output", str(output), "--fresh", "--in-process"]
                command += [a for m in args.model_module for a in ("--model-module", m)]
                command += ["--size", f"{args.size[0]}x{args.size[1]}"] if args.size else []
                command += ["--cache-dir", args.cache_dir] if args.cache_dir else []
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0 or not output.is_file():
                    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                    results.append({"model": model, "backend": backend, "precision": None,
                                    "error": f"benchmark process failed (exit {done.returncode}): {tail[0]}"})
                    continue
                results += json.loads(output.read_text())["results"]
    return results


def _key(result: dict) -> tuple:
    return (result.get("model"), result.get("backend"), result.get("precision"), result.get("height"),
            result.get("width"))


def write_bench(results: list, path: Path, settings: dict, fresh: bool) -> dict:
    """Merge `results` into bench.json at `path` (replacing figures with the same key)."""
    from deploy_parity.benchmarks.machine import describe_environment

    path = Path(path)
    kept = []
    if path.is_file() and not fresh:
        try:
            kept = [r for r in json.loads(path.read_text()).get("results", [])
                    if _key(r) not in {_key(n) for n in results}]
        except (OSError, ValueError):
            kept = []
    document = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": describe_environment(),
        "settings": settings,
        "results": kept + results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=1))
    tmp.replace(path)
    return document


def format_results(results: list) -> str:
    lines = [f"{'model':18s} {'backend':20s} {'prec':8s} {'HxW':9s} {'create ms':>10s} {'1st infer ms':>12s} "
             f"{'warm mean':>10s} {'median':>8s} {'p99':>8s}  throughput img/s"]
    for r in results:
        if r.get("error"):
            lines.append(f"{r['model']:18s} {r['backend']:20s} {r['error']}")
            continue
        cold, warm = r["cold"], r["warm"]
        throughput = ", ".join(f"b{t['batch']} {t['images_per_second']:.1f}" for t in r["throughput"])
        lines.append(f"{r['model']:18s} {r['backend']:20s} {r['precision']:8s} {r['height']}x{r['width']:<5d} "
                     f"{cold['create_seconds'] * 1000:10.1f} {cold['first_infer_seconds'] * 1000:12.1f} "
                     f"{warm['mean_ms']:10.2f} {warm['median_ms']:8.2f} {warm['p99_ms']:8.2f}  {throughput}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from deploy_parity.errors import HarnessError

    args = parse_args(argv)
    try:
        results = measure_in_process(args) if args.in_process else measure_isolated(args)
    except HarnessError as error:  # an unknown model or backend name: say which, list the known ones
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings = {"warmup": args.warmup, "runs": args.runs, "batches": list(args.batches),
                "throughput_runs": args.throughput_runs, "isolated": not args.in_process,
                "torch_threads": args.torch_threads or "torch default", "onnxruntime_threads": 1}
    write_bench(results, Path(args.output), settings, args.fresh)
    print(format_results(results))
    print(f"written to {args.output}")
    return 1 if any(r.get("error") and not str(r["error"]).startswith("unavailable") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
