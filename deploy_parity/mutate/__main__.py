"""python -m deploy_parity.mutate MODEL [MODEL ...]: plant single-node changes into each
model's graph, run the parity suite on every mutant, and report how many it catches and
whether each failure is localised to the changed node (deploy_parity/mutate/selftest.py).

Exit status 1 when a model's suite catches fewer than --min-caught of its non-equivalent
mutants, localises fewer than --min-right of the caught ones to the right place, or
names a wrong place even once; 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def parse(argv):
    from deploy_parity.mutate.operators import OPERATORS

    parser = argparse.ArgumentParser(prog="python -m deploy_parity.mutate", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model case names (the zoo's, or those of --model-module)")
    parser.add_argument("--model-module", action="append", default=[], help="a user's cases module (path or dotted)")
    parser.add_argument("--operators", default=",".join(OPERATORS), help=f"comma-separated, of {list(OPERATORS)}")
    parser.add_argument("--per-operator", type=int, default=2, help="sites per operator (default 2)")
    parser.add_argument("--examples", type=int, default=10, help="examples the property draws per mutant (default 10)")
    parser.add_argument("--cache-dir", default=os.environ.get("PARITY_CACHE_DIR"), help="export cache")
    parser.add_argument("--out", default="reports/output", help="folder for self-test-<model>.json")
    parser.add_argument("--min-caught", type=float, default=0.95)
    parser.add_argument("--min-right", type=float, default=0.90)
    args = parser.parse_args(argv)
    args.operators = [o.strip() for o in args.operators.split(",") if o.strip()]
    unknown = [o for o in args.operators if o not in OPERATORS]
    if unknown:
        parser.error(f"--operators: unknown {unknown}; expected some of {list(OPERATORS)}")
    if args.per_operator < 1 or args.examples < 1:
        parser.error("--per-operator and --examples must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    sys.path.insert(0, os.getcwd())  # the zoo (models/) and a user's helpers beside their cases
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(args.out).resolve() / "ultralytics"))
    from deploy_parity.backends import RunnerContext
    from deploy_parity.errors import HarnessError
    from deploy_parity.mutate.selftest import self_test
    from deploy_parity.pool import RunnerPool
    from deploy_parity.registry import build_registry

    try:
        registry = build_registry(args.model_module, wanted=args.models)
        cases = [registry.get(name) for name in args.models]
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    context = RunnerContext(cache_dir=Path(args.cache_dir)) if args.cache_dir else RunnerContext()
    pool = RunnerPool(context)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    status = 0
    summaries = []
    for case in cases:
        print(f"{case.name}: planting {','.join(args.operators)} ({args.per_operator} site(s) each), "
              f"{args.examples} examples per mutant", flush=True)
        report = self_test(case, pool, operators=args.operators, per_operator=args.per_operator,
                           examples=args.examples, workdir=out / "mutants" / case.name,
                           progress=lambda line: print(line, flush=True))
        (out / f"self-test-{case.name}.json").write_text(json.dumps(report.to_record(), indent=1))
        summaries.append(report.summary())
        print(report.summary(), flush=True)
        if report.count("wrong") or (report.live and report.caught_fraction() < args.min_caught) or (
                report.caught and report.right_fraction() < args.min_right):
            status = 1
    print("\n" + "\n".join(summaries))
    return status


if __name__ == "__main__":
    sys.exit(main())
