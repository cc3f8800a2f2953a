"""The summary table printed at the end of a run (and the numbers behind it)."""

from __future__ import annotations

import json
from collections import defaultdict

from reports.metrics import ERROR_METRICS, group_key, worst_errors

VERDICTS = ("pass", "fail", "error", "timeout", "ambiguous", "vacuous", "refused")


def summarise(records: list) -> list:
    """Rows per (model, backend, precision, check): counts per verdict and worst errors."""
    groups = defaultdict(list)
    for record in records:
        groups[group_key(record)].append(record)
    rows = []
    for (model, backend, precision, check), items in sorted(groups.items()):
        row = {"model": model, "backend": backend, "precision": precision, "check": check, "cases": len(items)}
        for verdict in VERDICTS:
            row[verdict] = sum(r["verdict"] == verdict for r in items)
        worst = [worst_errors(r) for r in items]
        for metric in ERROR_METRICS:
            values = [w[metric] for w in worst if w[metric] is not None]
            row[metric] = max(values) if values else None
        # Distinct contracts seen: one for a fixed or dynamic graph, one per size for a
        # per-size case (and per dtype signature when inputs take several dtypes).
        row["accepted_shapes"] = sorted({json.dumps(r["accepted_shapes"], sort_keys=True)
                                         for r in items if r.get("accepted_shapes")})
        # Distinct sizes, and how many of those are rectangles (not how many cases were).
        sizes = {(r["height"], r["width"]) for r in items}
        row["sizes"] = len(sizes)
        row["non_square"] = sum(h != w for h, w in sizes)
        rows.append(row)
    return rows


def format_table(rows: list) -> str:
    headers = ["model", "backend", "prec", "check", "cases", "pass", "fail", "error", "timeout", "ambig", "vacuous",
               "refused", "HxW seen", "worst kpt px", "worst box px", "worst abs"]

    def fmt(v):
        return "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))

    body = [[r["model"], r["backend"], r["precision"], r["check"], r["cases"], r["pass"], r["fail"], r.get("error", 0),
             r.get("timeout", 0), r["ambiguous"], r["vacuous"], r["refused"], f"{r['sizes']} ({r['non_square']} non-sq)", r["max_px"],
             r["max_corner_px"], r["max_abs"]] for r in rows]
    body = [[fmt(v) for v in line] for line in body]
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in body]
    return "\n".join(lines)


def format_accepted(rows: list) -> str:
    """One line per (model, backend): the input shapes its artifact(s) accept."""
    seen = defaultdict(set)
    for r in rows:
        seen[(r["model"], r["backend"])].update(r.get("accepted_shapes") or ())
    lines = []
    for (model, backend), contracts in sorted(seen.items()):
        if not contracts:
            continue
        example = "; ".join(f"{k}: {v}" for k, v in json.loads(sorted(contracts)[0]).items())
        if len(contracts) == 1:
            lines.append(f"{model} @ {backend} accepts {example}")
        else:
            lines.append(f"{model} @ {backend}: {len(contracts)} artifacts (one per size/dtypes), e.g. {example}")
    return "\n".join(lines)
