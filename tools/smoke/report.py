"""summary.md: the run in one page (stack, dependencies, test outcomes per model x backend,
worst errors against the tolerance table, latency, notes and problems), and its brief form
printed at the end of a run. Rendered from summary.json's content alone."""

from __future__ import annotations

import json
import math

from reports.numbers import number_text

from .outcomes import ERROR_COLUMNS


def metric_cell(entry) -> str:
    """`value / limit` for one worst metric; its value is never NaN (worst_by_model_precision
    turns a NaN error into inf and leaves a NaN minimum out)."""
    if not entry:
        return "-"
    value, limit = entry["value"], entry.get("limit")
    text = "inf" if value in (math.inf, -math.inf) else number_text(value)
    if isinstance(limit, (int, float)):
        beyond = value > limit if entry["direction"] == "max" else value < limit
        rtol = f"+{number_text(entry['rtol'])}r" if entry.get("rtol") else ""
        # With a relative part the limit depends on |ref|, which the record does not keep: only
        # the comparison's own verdict says whether it was beyond.
        text += f" / {number_text(float(limit))}{rtol}" + (" **!**" if beyond and not rtol else "")
    if entry.get("verdict") == "fail":
        text += " FAIL"
    return text


def render_markdown(summary: dict, brief: bool = False) -> str:
    lines = []
    add = lines.append
    stack = summary.get("stack") or {}
    torch_info = stack.get("torch") or {}
    ort = stack.get("onnxruntime") or {}
    if not brief:
        add(f"# GPU smoke: {summary.get('mode')} run, {summary.get('started_at')}")
        add("")
        add(f"`{summary.get('command')}`; elapsed {summary.get('elapsed_seconds')}s of "
            f"{summary.get('deadline_seconds')}s")
        add("")
        add("## Stack")
        add("")
        devices = ", ".join(f"{d['name']} (sm {d['capability']}, {d['memory_gib']} GiB)"
                            for d in torch_info.get("devices", [])) or "none"
        smi = stack.get("nvidia_smi") or {}
        add(f"- Python {stack.get('python')} on {stack.get('platform')}")
        init = (f", CUDA init {torch_info['cuda_init_seconds']}s" if torch_info.get("cuda_init_seconds") is not None
                else "")
        add(f"- torch {torch_info.get('version')}, CUDA build {torch_info.get('cuda_build')}, cuDNN "
            f"{torch_info.get('cudnn')}, cuda available {torch_info.get('cuda_available')}{init}")
        add(f"- GPU: {devices}; driver {smi.get('driver')} (CUDA {smi.get('cuda_driver_api')})")
        add(f"- onnxruntime {ort.get('version')}: {ort.get('providers')}")
        mods = stack.get("modules") or {}
        add("- imports: " + ", ".join(f"{n} {m.get('version') or ''}".strip() if m.get("ok") else f"{n} MISSING"
                                      for n, m in mods.items()))
        for name, value in (torch_info.get("checks") or {}).items():
            add(f"- CUDA check `{name}`: `{json.dumps(value, default=str)[:300]}`")
        deps = summary.get("deps") or {}
        add("")
        add("## Dependencies")
        add("")
        add(f"- missing in the image (harness imports): {deps.get('missing_in_image') or 'nothing'}")
        if deps.get("extracted"):
            add("- extracted from wheels: " + ", ".join(e["wheel"] for e in deps["extracted"]))
        if deps.get("after_fallback"):
            add(f"- still missing after that: {sorted(deps['after_fallback'].get('missing', {})) or 'nothing'}")
        if deps.get("import_errors"):
            add(f"- import errors: `{deps['import_errors']}`")
        add("")
    parity = summary.get("parity") or {}
    add("## Parity: tests per model x backend" if not brief else "parity tests per model x backend:")
    add("")
    if parity.get("runs"):
        for backend, run in parity["runs"].items():
            add(f"- {backend}: {'TIMED OUT' if run['timed_out'] else 'exit ' + str(run['rc'])} in {run['seconds']}s, "
                f"{run.get('records')} records, tests {run.get('tests')}")
            if run.get("running_when_stopped"):
                add(f"  - still running when stopped: {run['running_when_stopped']}")
            if run.get("log_tail") and not brief:
                add("")
                add("  ```")
                lines.extend("  " + line for line in run["log_tail"].splitlines())
                add("  ```")
        add("")
        add("| model | backend | status | passed | failed | error | skipped | first problem |")
        add("|---|---|---|---|---|---|---|---|")
        for row in parity.get("tests", []):
            problem = (row["problems"][0] if row["problems"] else "").replace("|", "/")[:160]
            add(f"| {row['model']} | {row['backend']} | {row['status']} | {row['passed']} | {row['failed']} | "
                f"{row['error']} | {row['skipped']} | {problem} |")
        add("")
        add("## Worst errors per model x precision (parity check), value / limit (r: + score_rtol x |ref|; "
            "!: beyond the limit; FAIL: that comparison failed)" if not brief
            else "worst errors (parity check), value / limit (r: + score_rtol x |ref|; !: beyond the limit; "
            "FAIL: that comparison failed):")
        add("")
        columns = [c[4] for c in ERROR_COLUMNS]
        add("| model | backend | prec | cases | verdicts | " + " | ".join(columns) + " |")
        add("|---|---|---|---|---|" + "---|" * len(columns))
        for group in parity.get("errors", []):
            if group["check"] != "parity":
                continue
            verdicts = ", ".join(f"{k} {v}" for k, v in sorted(group["verdicts"].items()))
            add(f"| {group['model']} | {group['backend']} | {group['precision']} | {group['cases']} | {verdicts} | "
                + " | ".join(metric_cell(group["metrics"].get(c)) for c in columns) + " |")
        if not brief:
            add("")
            add("Other checks (batch consistency, determinism):")
            add("")
            add("| model | backend | check | cases | verdicts |")
            add("|---|---|---|---|---|")
            for group in parity.get("errors", []):
                if group["check"] != "parity":
                    verdicts = ", ".join(f"{k} {v}" for k, v in sorted(group["verdicts"].items()))
                    add(f"| {group['model']} | {group['backend']} | {group['check']} | {group['cases']} | {verdicts} |")
    else:
        add("(not run)")
    add("")
    bench = summary.get("bench") or {}
    add("## Latency (one fresh process per pair)" if not brief else "latency:")
    add("")
    if bench.get("pairs"):
        add("| model | backend | prec | HxW | create ms | 1st infer ms | warm median ms | p99 ms | throughput img/s |")
        add("|---|---|---|---|---|---|---|---|---|")
        for pair in bench["pairs"]:
            for r in pair["results"]:
                if r.get("error"):
                    add(f"| {r.get('model')} | {r.get('backend')} | {r.get('precision') or '-'} | | "
                        f"{str(r['error'])[:120].replace('|', '/')} | | | | |")
                    continue
                cold, warm = r["cold"], r["warm"]
                throughput = ", ".join(f"b{t['batch']} {t['images_per_second']:.0f}" for t in r.get("throughput", []))
                add(f"| {r['model']} | {r['backend']} | {r['precision']} | {r['height']}x{r['width']} | "
                    f"{cold['create_seconds'] * 1000:.1f} | {cold['first_infer_seconds'] * 1000:.1f} | "
                    f"{warm['median_ms']:.2f} | {warm['p99_ms']:.2f} | {throughput} |")
        if bench.get("skipped"):
            add("")
            add(f"skipped for lack of time: {', '.join(bench['skipped'])}")
    else:
        add("(not run)")
    add("")
    if summary.get("notes") or summary.get("problems"):
        add("## Notes and problems" if not brief else "notes and problems:")
        add("")
        for note in summary.get("notes", []):
            add(f"- {note}")
        for problem in summary.get("problems", []):
            add(f"- PROBLEM: {problem if not brief else problem.splitlines()[0][:300]}")
        add("")
    add("phases: " + ", ".join(f"{n} {p['status']} {p['seconds']}s" for n, p in summary.get("phases", {}).items()))
    return "\n".join(lines) + "\n"
