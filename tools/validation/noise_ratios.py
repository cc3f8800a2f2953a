"""How far each candidate's error sits above the model's own rounding: the ratios behind
the noise factor of the tolerance table (kind "noise").

Reads the records of one or more parity runs (results.jsonl under --reports-dir) and
prints, per (model, backend, check, quantity), how many comparisons had a measured noise
floor, the largest error / noise ratio, the largest error and noise, and how many would
fail at a given factor. Usage:

    python tools/validation/noise_ratios.py reports/output/results.jsonl [more.jsonl ...] [--factor 20]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

# comparison kind -> (metric of the candidate's error, noise field it is judged against)
QUANTITIES = {
    "boxes": (("max_corner_px", "corner_px"), ("max_score_abs", "score_abs")),
    "keypoints": (("max_px", "pixel"), ("max_score_abs", "score_abs")),
    "masks": (("max_soft_abs", "soft_abs"),),
    "tensor": (("max_abs", "atol"),),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+")
    parser.add_argument("--factor", type=float, default=None, help="count comparisons whose ratio exceeds it")
    args = parser.parse_args()
    rows = defaultdict(lambda: {"n": 0, "ratio": 0.0, "error": 0.0, "noise": 0.0, "limit": 0.0, "over": 0})
    verdicts = defaultdict(lambda: defaultdict(int))
    for path in args.results:
        with open(path) as handle:
            for line in handle:
                record = json.loads(line)
                if record.get("check") not in ("parity", "batch"):
                    continue
                verdicts[record["model"]][record["verdict"]] += 1
                for comparison in record.get("comparisons", []):
                    noise = comparison.get("noise") or {}
                    for metric, field in QUANTITIES.get(comparison["kind"], ()):
                        entry = noise.get(field)
                        error = comparison.get("metrics", {}).get(metric)
                        if not isinstance(entry, dict) or not isinstance(error, (int, float)):
                            continue
                        row = rows[(record["model"], record["backend"], record["check"], f"{comparison['kind']}.{field}")]
                        row["n"] += 1
                        ratio = error / entry["noise"] if entry["noise"] > 0 else (0.0 if error == 0 else float("inf"))
                        row["ratio"] = max(row["ratio"], ratio)
                        if error >= row["error"]:  # the worst error, with the noise and limit it met
                            row["error"], row["limit"] = error, entry["limit"]
                        row["noise"] = max(row["noise"], entry["noise"])
                        if args.factor is not None and ratio > args.factor:
                            row["over"] += 1
    print(f"{'model':34} {'backend':11} {'check':7} {'quantity':22} {'n':>5} {'max ratio':>10} {'max error':>10} "
          f"{'max noise':>10} {'limit@max':>10}" + (f" {'> factor':>8}" if args.factor else ""))
    for (model, backend, check, quantity), row in sorted(rows.items()):
        print(f"{model:34} {backend:11} {check:7} {quantity:22} {row['n']:5d} {row['ratio']:10.3g} {row['error']:10.3g} "
              f"{row['noise']:10.3g} {row['limit']:10.3g}" + (f" {row['over']:8d}" if args.factor else ""))
    print("\nverdicts of the parity and batch cases per model:")
    for model, counts in sorted(verdicts.items()):
        print(f"  {model:34} " + ", ".join(f"{v} {n}" for v, n in sorted(counts.items())))


if __name__ == "__main__":
    main()
