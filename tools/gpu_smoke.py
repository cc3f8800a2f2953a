#!/usr/bin/env python3
"""One-shot smoke run of the harness on a lent GPU machine, inside a hard time budget.

    python tools/gpu_smoke.py OUT                  # on the GPU machine (repo root, `.whl/` carried)
    python tools/gpu_smoke.py OUT --dry-run        # anywhere: the same phases, tiny, on CPU backends
    python tools/gpu_smoke.py --prepare-wheels .whl   # here, before: wheels the GPU image lacks

The GPU image has Python, torch (CUDA), torchvision, onnx, onnxruntime (CPU build),
hypothesis and numpy, and no network. This script needs only the standard library
itself; all real work runs in child processes, each under a timeout, so a hang or a
crash in one phase never costs the others. Phases, in order:

  stack    Python, torch/CUDA/cuDNN, GPU, driver (nvidia-smi), ONNX Runtime and its
           providers, which optional packages import; a few CUDA sanity checks (TF32
           switch, fp16 conv, torchvision NMS in half). -> stack.json
  deps     what the harness (suites, fixtures, reports, bench) fails to import here. Each
           missing module that a wheel in `.whl/` provides is extracted (wheels are zips)
           into a temporary directory put on PYTHONPATH; nothing is installed.
  parity   pytest suites --backend B --hypothesis-profile ci, one pytest process per
           backend (torch-cuda-fp32, torch-cuda-fp16, torch-cuda-autocast), run side by
           side on the one GPU. -> parity/<backend>/{results.jsonl,junit.xml,pytest.log}
  bench    python -m deploy_parity.benchmarks.latency, one process per (model, backend) pair (a true
           cold start each): CUDA backends first, onnxrt-cpu for comparison while time
           is left. -> bench/bench.json, bench/pairs/*.json
  summary  summary.md / summary.json: test outcomes per model x backend, worst errors per
           model x precision against the tolerance table, latency; rewritten after every
           phase, so a run cut short still leaves what it had.

Without a CUDA device (or with --dry-run) the same phases run on CPU backends with a
tiny budget (torch-cpu, 2 Hypothesis examples, one model) to prove the plumbing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
# The parts live in tools/smoke/ and are imported from this folder as `smoke`, not as
# `tools.smoke`: tools/ has no __init__.py, and a regular package named `tools` installed
# anywhere on the path (some wheels ship one) would win over that namespace package. The
# checkout goes on the path too, for reports.numbers (the reports' number formatting).
sys.path[:0] = [str(TOOLS), str(TOOLS.parent)]

from smoke.plan import COMPARISON_BACKEND, DEFAULT_DEADLINE_S, DRY_DEADLINE_S, DRY_MODEL  # noqa: E402
from smoke.prepare_wheels import prepare_wheels  # noqa: E402
from smoke.probe import probe  # noqa: E402
from smoke.runner import SmokeRun  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python tools/gpu_smoke.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("out", nargs="?", help="output folder (created)")
    parser.add_argument("--dry-run", action="store_true", help="CPU backends, tiny budget (automatic without CUDA)")
    parser.add_argument("--deadline", type=float, default=None,
                        help=f"global wall-clock budget in seconds (default {DEFAULT_DEADLINE_S:.0f}; dry run "
                             f"{DRY_DEADLINE_S:.0f})")
    parser.add_argument("--rehearse", action="store_true",
                        help="the GPU plan (default zoo, ci profile, full bench settings) even without CUDA: give "
                             "CPU --backends/--bench-backends to rehearse budgets and reports on a CPU machine")
    parser.add_argument("--wheels", default=".whl", help="folder of wheels for what the image lacks (default .whl)")
    parser.add_argument("--models", action="append", help="model cases (default: the default zoo; dry run: "
                                                           f"{DRY_MODEL})")
    parser.add_argument("--backends", action="append", help="parity backends (default: the three torch CUDA ones; "
                                                             "dry run: torch-cpu)")
    parser.add_argument("--bench-backends", action="append", help="benchmark backends (default as --backends)")
    parser.add_argument("--no-comparison", action="store_true", help=f"no {COMPARISON_BACKEND} benchmark")
    parser.add_argument("--profile", default=None, help="Hypothesis profile (default ci; dry run: 2 examples)")
    parser.add_argument("--dry-examples", type=int, default=2, help="max_examples of the dry run's profile")
    parser.add_argument("--parity-jobs", type=int, default=3, help="pytest processes side by side (one per backend)")
    parser.add_argument("--parity-timeout", type=float, default=240, help="parity phase limit, seconds")
    parser.add_argument("--bench-reserve", type=float, default=120, help="seconds kept for the bench phase")
    parser.add_argument("--pair-timeout", type=float, default=60, help="limit per benchmark process, seconds")
    parser.add_argument("--min-pair-seconds", type=float, default=12,
                        help="start no benchmark pair with less time left than this")
    parser.add_argument("--probe-timeout", type=float, default=60, help="limit of the stack probe, seconds")
    parser.add_argument("--torch-threads", type=int, default=0, help="PARITY_TORCH_THREADS for the suites (0: the "
                                                                     "harness default, 1)")
    parser.add_argument("--prepare-wheels", metavar="DIR", help="download the wheels the GPU image lacks into DIR")
    parser.add_argument("--python-version", default="3.12", help="with --prepare-wheels: the GPU image's Python")
    parser.add_argument("--with", dest="extra", action="append", default=[], metavar="PKG",
                        help="with --prepare-wheels: download PKG too (e.g. scipy)")
    parser.add_argument("--probe", metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--name", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (args.prepare_wheels or args.probe or args.out):
        parser.error("the output folder is required")
    if args.deadline is None:
        args.deadline = DRY_DEADLINE_S if args.dry_run else DEFAULT_DEADLINE_S
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.probe:
        return probe(args.probe, args.name, args.full)
    if args.prepare_wheels:
        return prepare_wheels(args.prepare_wheels, args.python_version, args.extra, [sys.executable, "-m", "pip"])
    return SmokeRun(args).run()


if __name__ == "__main__":
    sys.exit(main())
