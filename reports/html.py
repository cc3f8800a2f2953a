"""The static HTML report: reports/output/index.html plus the PNGs it shows.

Pure page assembly from data already gathered (records, run figures, history,
pictures, benchmarks); nothing here runs a model or reads the database. Every piece
of text from a record is escaped. A few lines of script mark any picture that fails to
load, on the page and in <html data-images-*> attributes (which the browser test reads).
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from reports.metrics import ERROR_METRICS, worst_errors
from deploy_parity.benchmarks.process import PHASE_COLUMNS
from reports.numbers import number_text as _num
from reports.overhead import format_overhead, format_phases
from reports.regressions import describe_rule
from reports.summary import VERDICTS

CHECK_ORDER = ("coverage", "parity", "batch", "determinism", "refusal", "agreement")
_SEVERITY = {"error": 6, "timeout": 5, "fail": 4, "refused": 3, "ambiguous": 2, "vacuous": 1, "pass": 0}


@dataclass
class Picture:
    record_index: int  # position in ReportPage.records
    file: Optional[str]  # relative to the page; None when no picture could be made
    caption: str


@dataclass
class ReportPage:
    run: dict  # run.json's content
    rows: list  # reports.summary.summarise(records)
    records: list
    pictures: list = field(default_factory=list)
    pictures_left_out: int = 0  # failing/ambiguous cases beyond the picture cap
    histogram: Optional[str] = None
    trend: Optional[str] = None
    history: dict = field(default_factory=dict)  # run.json's "history" part plus "recent_runs"
    bench: Optional[dict] = None
    overhead_bench: Optional[dict] = None  # overhead.json: python -m deploy_parity.benchmarks.overhead


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ddd; padding: 2px 6px; }
th { background: #f4f4f4; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.pass { background: #e6f4ea; } .fail { background: #fbe3e4; } .ambiguous { background: #fff4d6; }
.vacuous { background: #eeeeee; } .refused { background: #e3ecfb; } .error { background: #f6c6c8; }
.timeout { background: #f3d0f0; } .status { padding: 0.6em 1em; border: 2px solid #c33; background: #fbe3e4; }
.status.running { border-color: #c90; background: #fff4d6; }
.regression { background: #fbe3e4; } code { font-size: 0.85em; word-break: break-all; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; max-width: 640px; }
figcaption { font-size: 0.85em; } figure img { max-width: 100%; max-height: 520px; border: 1px solid #ccc; }
img.missing { outline: 3px solid red; } .note { color: #666; font-size: 0.9em; }
"""

# Marks pictures that did not load, for the reader and for the browser test.
_IMAGE_CHECK = """
window.addEventListener("load", function () {
  var images = document.images, loaded = 0, broken = [];
  for (var i = 0; i < images.length; i++) {
    if (images[i].complete && images[i].naturalWidth > 0) { loaded++; }
    else { broken.push(images[i].getAttribute("src")); images[i].className += " missing";
           images[i].insertAdjacentText("afterend", " [image missing: " + images[i].getAttribute("src") + "]"); }
  }
  var root = document.documentElement;
  root.setAttribute("data-images-total", images.length);
  root.setAttribute("data-images-loaded", loaded);
  root.setAttribute("data-images-broken", broken.join(" "));
});
"""


def _table(headers: list, rows: list, row_classes: Optional[list] = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        css = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(cell if cell.startswith("<td") else f"<td>{cell}</td>" for cell in row)
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _run_section(page: ReportPage) -> str:
    run, env = page.run, page.run.get("environment", {})
    facts = [
        ("run", f"#{page.history.get('run_id', '-')} ({_e(run.get('status', '-'))}, exit status "
                f"{_e(run.get('exit_status', '-'))})"),
        ("run uid", f"<code>{_e(run.get('run_uid'))}</code>"),
        ("started / finished (UTC)", f"{_e(run.get('started_at'))} / {_e(run.get('finished_at'))}"),
        ("command", f"<code>{_e(run.get('command'))}</code>"),
        ("Hypothesis profile", _e(run.get("hypothesis_profile"))),
        ("torch / onnxruntime / TensorRT", " / ".join(_e(env.get(k) or "not installed")
                                                      for k in ("torch", "onnxruntime", "tensorrt"))),
        ("device", _e(env.get("device"))),
        ("cases checked", _e(run.get("cases"))),
        ("exports", f"{_e(run.get('exports'))} (cache hits {_e(run.get('export_cache_hits'))}, "
                    f"{_num(run.get('export_seconds'))} s exporting)"),
        ("TensorRT engines", f"{_e(run.get('engine_builds', 0))} built ({_num(run.get('engine_build_seconds'))} s), "
                             f"{_e(run.get('engine_cache_hits', 0))} from the cache (trt-* backends)"),
        ("harness overhead", _e(format_overhead(run["overhead"])) if "overhead" in run else "-"),
        ("time per case", _e(format_phases(run["overhead"])) if "overhead" in run else "-"),
    ]
    if run.get("workers"):
        facts.append(("xdist workers", _e(", ".join(
            f"{w['id']}: {w['cases']} cases, {w['torch_threads']} torch thread(s)"
            + (f", CUDA_VISIBLE_DEVICES={w['gpu']}" if w.get("gpu") is not None else "") for w in run["workers"]))))
    shard = run.get("shard")
    if shard:  # one part of a sharded run (--shard K/N)
        facts.append(("shard", _e(f"{shard['index']}/{shard['count']}: {len(shard['units'])} of {shard['all_units']} "
                                  f"(model case, backend) units, planned {shard['planned_seconds']:.0f} s; "
                                  f"{shard['balanced_by']}; plan {shard['plan_digest']}")))
    for part in run.get("shards") or []:  # a run merged from shards (python -m reports.merge)
        link = (f" <a href='{_e(part['report'])}'>its report</a>" if part.get("report") else "")
        facts.append((f"shard {part['index']}/{part['count']}",
                      _e(f"{part['status']}, exit status {part['exit_status']}, {part['cases']} cases, "
                         f"{part['wall_seconds']} s, {len(part['units'])} units, host {part.get('host') or '-'}")
                      + link))
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    return f"<h2 id='run'>Run</h2><table>{rows}</table>"


def _matrix_section(page: ReportPage) -> str:
    checks = sorted({r["check"] for r in page.rows},
                    key=lambda c: (CHECK_ORDER.index(c) if c in CHECK_ORDER else len(CHECK_ORDER), c))
    cells = defaultdict(dict)
    for row in page.rows:
        cells[(row["model"], row["backend"], row["precision"])][row["check"]] = row
    placements = _placements(page.records)
    body, classes = [], []
    for (model, backend, precision), by_check in sorted(cells.items()):
        line = [_e(model), _e(backend) + placements.get((model, backend), ""), _e(precision)]
        for check in checks:
            row = by_check.get(check)
            if row is None:
                line.append("<td>-</td>")
                continue
            worst = max((v for v in VERDICTS if row.get(v)), key=_SEVERITY.get, default="vacuous")
            counts = " &middot; ".join(f"{row[v]} {v}" for v in VERDICTS if row.get(v))
            if check == "agreement":  # the task metric beside the verdict, per task
                counts += "".join(f"<br>{_e(c['kind'])} AP {c['metrics']['ap']:.3f}" for r in page.records
                                  if (r["model"], r["backend"], r["check"]) == (model, backend, check)
                                  for c in r.get("comparisons", []) if "ap" in c.get("metrics", {}))
            line.append(f'<td class="{worst}">{counts}</td>')
        body.append(line)
        classes.append("")
    return ("<h2 id='matrix'>Model x backend x precision</h2>"
            "<p class='note'>Cases per check, by verdict. Coloured by the worst verdict in the cell.</p>"
            + _table(["model", "backend", "precision", *checks], body, classes))


# Distinct placement lines shown per (model, backend): one per deploy target at most, and
# targets of one graph mostly share theirs.
SHOWN_PLACEMENTS = 3


def _placements(records: list) -> dict:
    """(model, backend) -> the records' distinct "placement" lines (where a partitioning
    provider such as onnxrt-trt's TensorRT ran the graph), as notes under the backend's name."""
    seen = defaultdict(set)
    for record in records:
        if record.get("placement"):
            seen[(record["model"], record["backend"])].add(record["placement"])
    notes = {}
    for key, lines in seen.items():
        lines = sorted(lines)
        if len(lines) > SHOWN_PLACEMENTS:
            lines = lines[:SHOWN_PLACEMENTS] + [f"and {len(lines) - SHOWN_PLACEMENTS} more"]
        notes[key] = "".join(f"<br><span class='note'>{_e(line)}</span>" for line in lines)
    return notes


def _summary_section(page: ReportPage) -> str:
    body = [[_e(r["model"]), _e(r["backend"]), _e(r["precision"]), _e(r["check"]),
             *(f'<td class="n">{r.get(k, 0)}</td>' for k in ("cases", *VERDICTS)),
             f"{r['sizes']} ({r['non_square']} non-square)",
             *(f'<td class="n">{_num(r[m])}</td>' for m in ERROR_METRICS)] for r in page.rows]
    return ("<h2 id='summary'>Summary</h2>"
            + _table(["model", "backend", "prec", "check", "cases", *VERDICTS, "sizes seen",
                      *ERROR_METRICS.values()], body))


def _history_section(page: ReportPage) -> str:
    history = page.history
    if not history:
        return ""
    parts = ["<h2 id='history'>Trend and regressions</h2>",
             f"<p class='note'>History: <code>{_e(history.get('db'))}</code>. Regressions are {_e(describe_rule())}."
             " Runs that did not complete are never compared against.</p>"]
    baselines = history.get("baseline_run_ids") or []
    regressions = history.get("regressions") or []
    if not baselines:
        parts.append("<p>No earlier complete run with this profile checked these models: nothing to compare.</p>")
    elif not regressions:
        parts.append(f"<p>No metric regressions against run(s) {_e(', '.join(f'#{i}' for i in baselines))}.</p>")
    else:
        body = [[_e(r["model"]), _e(r["backend"]), _e(r["precision"]), _e(r["check"]),
                 _e(ERROR_METRICS[r["metric"]]), f'<td class="n">{_num(r["baseline"])}</td>',
                 f'<td class="n">{_num(r["current"])}</td>',
                 _e(f"x{r['growth']:.3g}" if r.get("growth") else "from 0"), f"#{_e(r['baseline_run_id'])}",
                 f"<code>{_e(r['replay'])}</code>"] for r in regressions]
        parts.append(f"<p><strong>{len(regressions)} metric regression(s)</strong> (tolerances may still pass):</p>")
        parts.append(_table(["model", "backend", "prec", "check", "metric", "baseline", "now", "growth",
                             "baseline run", "re-run the worst case"], body, ["regression"] * len(body)))
    if page.trend:
        # An SVG in <img> shows no tooltips: the link opens it alone, where hovering a point gives its value.
        parts.append(f"<figure><a href='{_e(page.trend)}'><img src='{_e(page.trend)}' "
                     "alt='trend of worst errors per run'></a>"
                     "<figcaption>Worst error per group over the complete runs in the history "
                     "(exact zeros drawn at 1e-9). Click to open the figure; hover a point for its value."
                     "</figcaption></figure>")
    recent = history.get("recent_runs") or []
    if recent:
        body = [[f"#{_e(r['id'])}", _e(r["started_at"]), _e(r["finished_at"] or "-"),
                 f'<td class="{"pass" if r["status"] == "complete" else "ambiguous"}">{_e(r["status"])}</td>',
                 _e(r.get("exit_status", "-")), f'<td class="n">{_e(r["cases"])}</td>',
                 f'<td class="n">{_e(r.get("failed_cases") or 0)}</td>', _e(r.get("hypothesis_profile")),
                 f'<td class="n">{_num(r.get("wall_seconds"))}</td>',
                 _e(f"torch {r.get('torch_version')}, ort {r.get('onnxruntime_version')}, "
                    f"trt {r.get('tensorrt_version') or '-'}"), _e(r.get("device"))] for r in recent]
        parts.append("<p>Recent runs:</p>" + _table(
            ["run", "started (UTC)", "finished", "status", "exit", "cases", "failed cases", "profile", "wall s",
             "versions", "device"], body))
    return "".join(parts)


def _pictures_section(page: ReportPage) -> str:
    if not page.pictures:
        return ""
    parts = ["<h2 id='pictures'>Failing and ambiguous cases</h2>",
             "<p class='note'>Each case drawn from what its check compared: green is the first answer "
             "(the reference, the image alone, run 1), magenta dashed the second (the backend, the image in "
             "its batch, run 2).</p>"]
    for picture in page.pictures:
        record = page.records[picture.record_index]
        link = f"<a href='#case-{picture.record_index}'>case {picture.record_index}</a>"
        if picture.file:
            parts.append(f"<figure><img src='{_e(picture.file)}' alt='{_e(picture.caption)}'>"
                         f"<figcaption>{link}: {_e(picture.caption)}<br><code>{_e(record.get('replay'))}</code>"
                         "</figcaption></figure>")
        else:
            parts.append(f"<p>{link}: {_e(picture.caption)}</p>")
    if page.pictures_left_out:
        parts.append(f"<p class='note'>{page.pictures_left_out} more failing/ambiguous case(s) without a picture "
                     "(cap: --report-images); they are in the table below.</p>")
    return "".join(parts)


def _histogram_section(page: ReportPage) -> str:
    if not page.histogram:
        return ""
    return ("<h2 id='errors'>Error distribution</h2>"
            f"<figure><a href='{_e(page.histogram)}'><img src='{_e(page.histogram)}' "
            "alt='histogram of per-case worst errors'></a>"
            "<figcaption>Per-case worst error, log scale, stacked by backend. Click to open the figure; "
            "hover a bar for its count.</figcaption></figure>")


def _diagnosis_section(page: ReportPage) -> str:
    """Where each failing parity test breaks (stage, first divergent layer), and its most
    severe example beside the smallest (deploy_parity/localize/, properties.py)."""
    rows = []
    for r in page.records:
        loc, severe = r.get("localisation"), r.get("most_severe")
        if not loc and not severe:
            continue
        layer = (loc or {}).get("layer") or {}
        where = layer.get("own_code") or (f"module '{layer['module']}'" if layer.get("module") is not None else "")
        node = f" / {layer['node']} ({layer.get('op')})" if layer.get("node") else ""
        if layer.get("departs"):
            node += f": {layer['departs']}"
        if loc and loc.get("stage") and not layer:
            where = "not localised"
        links = "; ".join(f"{l['left']} vs {l['right']}: {'BREAKS' if l['broken'] else 'agrees'}"
                          for l in (loc or {}).get("links", []))
        rows.append([_e(r["model"]), _e(r["backend"]), f"{r['height']}x{r['width']} b{r['batch']}",
                     _e((loc or {}).get("stage") or "not found"), _e(links), _e(where + node),
                     _e(layer.get("difference") or ""), _e((loc or {}).get("note") or ""),
                     _e(f"{severe['example']}: {severe['worst_error']:.3g}" if severe else ""),
                     f"<code>{_e(severe['replay'] if severe else r.get('replay'))}</code>"])
    if not rows:
        return ""
    return ("<h2 id='diagnosis'>Where the failures break</h2><p>Per failing parity test, on its final shrunk "
            "example: the first link of eager reference &rarr; deploy module &rarr; graph on ONNX Runtime CPU &rarr; "
            "backend that breaks, the first divergent module or node inside it, and the most severe example seen.</p>"
            + _table(["model", "backend", "smallest", "stage", "chain", "first divergent layer", "difference", "note",
                      "most severe", "re-run (most severe)"], rows))


# Noise-floor fields a reader knows by name, and their unit.
_NOISE_FIELDS = {"corner_px": ("corners", " px"), "pixel": ("keypoints", " px"), "soft_abs": ("soft masks", ""),
                 "score_abs": ("scores", ""), "atol": ("values", "")}


def noise_cell(record: dict) -> str:
    """What the model's own rounding did to this case's limits, in one line: the widest
    noise-set limit ("corners 0.03 px -> limit 0.6 px, 20 x float64 shadow"), or why
    the table's rows applied alone."""
    best, note = None, ""
    for comparison in record.get("comparisons", []):
        noise = comparison.get("noise") or {}
        note = note or noise.get("note", "")
        for name, entry in noise.items():
            if name in _NOISE_FIELDS and isinstance(entry, dict) and entry.get("limit", 0) > entry.get("floor", 0):
                if best is None or entry["limit"] / max(entry["floor"], 1e-30) > best[1]["limit"] / max(best[1]["floor"], 1e-30):
                    best = (name, entry)
    if best is not None:
        (label, unit), entry = _NOISE_FIELDS[best[0]], best[1]
        return (f"{label} {entry['noise']:.2g}{unit} -> limit {entry['limit']:.2g}{unit} "
                f"({entry['factor']:g} x {entry['how']})")
    if note.startswith("table row only"):
        return note
    return "table floors (rounding below them)" if note else ""


def _cases_section(page: ReportPage) -> str:
    order = sorted(range(len(page.records)), key=lambda i: (-_SEVERITY.get(page.records[i]["verdict"], 0), i))
    body, classes = [], []
    for i in order:
        r = page.records[i]
        worst = worst_errors(r)
        message = r.get("message") or next((c.get("message") for c in r.get("comparisons", [])
                                            if c.get("verdict") == r["verdict"] and c.get("message")), "")
        body.append([f"<td id='case-{i}'>{i}</td>", _e(r["check"]), _e(r["model"]), _e(r["backend"]),
                     _e(r["precision"]), f"{r['height']}x{r['width']}", f'<td class="n">{r["batch"]}</td>',
                     _e(",".join(r["dtypes"])), f'<td class="n">{r["seed"]}</td>', _e(r["verdict"]),
                     *(f'<td class="n">{_num(worst[m])}</td>' for m in ERROR_METRICS),
                     f'<td class="n">{_num(r.get("seconds"))}</td>', _e(message[:300]), _e(noise_cell(r)[:160]),
                     f"<code>{_e(r.get('replay'))}</code>"])
        classes.append(r["verdict"])
    return ("<h2 id='cases'>Every checked case</h2>"
            + _table(["#", "check", "model", "backend", "prec", "HxW", "batch", "dtypes", "seed", "verdict",
                      "worst kpt px", "worst box px", "worst abs", "s", "message",
                      "own rounding (noise floor)", "re-run"], body, classes))


def _bench_section(page: ReportPage) -> str:
    bench = page.bench
    if not bench:
        return ""
    body = []
    for r in bench.get("results", []):
        if r.get("error"):
            body.append([_e(r["model"]), _e(r["backend"]), _e(r.get("precision")), "-", "<td colspan='6'>"
                         + _e(r["error"]) + "</td>", "-"])
            continue
        cold, warm = r["cold"], r["warm"]
        throughput = ", ".join(f"b{t['batch']}: {t['images_per_second']:.1f}" for t in r.get("throughput", []))
        body.append([_e(r["model"]), _e(r["backend"]), _e(r["precision"]), f"{r['height']}x{r['width']}",
                     f'<td class="n">{_num(cold["create_seconds"] * 1000, 4)}</td>',
                     f'<td class="n">{_num(cold["first_infer_seconds"] * 1000, 4)}</td>',
                     *(f'<td class="n">{_num(warm[k], 4)}</td>' for k in ("mean_ms", "median_ms", "p99_ms")),
                     f'<td class="n">{warm["runs"]} (+{warm["warmup_runs"]} warm-up)</td>', _e(throughput)])
    host = bench.get("host", {})
    return ("<h2 id='bench'>Latency benchmarks</h2>"
            f"<p class='note'>From <code>bench.json</code>, {_e(bench.get('created_at'))}, {_e(host.get('device'))}. "
            "Cold: a new runner (session/engine creation), then its first inference, measured apart. Warm: after "
            "the warm-up runs are discarded. Throughput in images per second by batch size.</p>"
            + _table(["model", "backend", "prec", "HxW", "cold: create ms", "cold: first infer ms", "warm mean ms",
                      "warm median ms", "warm p99 ms", "warm runs", "throughput (img/s)"], body))


def _overhead_bench_section(page: ReportPage) -> str:
    result = page.overhead_bench
    if not result:
        return ""
    body = []
    for run in result.get("runs", []):
        per_case = (run.get("phases") or {}).get("ms_per_case") or {}
        reuse = run.get("reuse") or {}
        body.append([_e(run.get("label")), f'<td class="n">{_num(run.get("outside_wall_seconds"))}</td>',
                     f'<td class="n">{_num(run.get("overhead_ratio"))}</td>', f'<td class="n">{_e(run.get("cases"))}</td>',
                     *(f'<td class="n">{_num(per_case.get(k))}</td>'
                       for k in PHASE_COLUMNS),
                     _e(f"{reuse.get('feeds_rendered')} / {reuse.get('feeds_distinct')} / {reuse.get('feeds_served')}"),
                     _e(f"{reuse.get('runner_activations')} / {reuse.get('distinct_artifacts')}")])
    judging = [[_e(r["model"]), _e(r["backend"]), f'<td class="n">{r["feeds"]}</td>',
                f'<td class="n">{_num(r["harness_seconds"] * 1000)}</td>',
                f'<td class="n">{_num(r["polygraphy_seconds"] * 1000)}</td>',
                f'<td class="n">{_num(r["harness_vs_polygraphy"])}</td>'] for r in result.get("judging", [])]
    return ("<h2 id='overhead'>Harness overhead benchmark</h2>"
            f"<p class='note'>From <code>overhead.json</code> ({_e(result.get('created'))}, profile "
            f"{_e(result.get('profile'))}, models {_e(result.get('models'))}): "
            "<code>python -m deploy_parity.benchmarks.overhead</code>. Overhead ratio: process seconds per second "
            "inside backends (1.0 would be a harness that costs nothing).</p>"
            + _table(["run", "wall s", "overhead ratio", "cases", "render ms/case", "activate ms/case",
                      "infer ms/case", "compare ms/case", "record ms/case", "other ms/case",
                      "feeds rendered / distinct / used", "activations / artifacts"], body)
            + ("<p class='note'>The same feeds judged by the harness's comparators (matched instances) and by "
               "Polygraphy's <code>Comparator.compare_accuracy</code> (element-wise):</p>"
               + _table(["model", "backend", "feeds", "harness ms", "Polygraphy ms", "harness / Polygraphy"], judging)
               if judging else ""))


def _status_banner(run: dict) -> str:
    """A run that did not complete says so first: a stale green page is worse than none."""
    status = run.get("status")
    if status in (None, "complete"):
        return ""
    reason = run.get("status_reason") or ""
    return (f"<p class='status' id='status'>This run is <strong>{_e(status)}</strong>"
            + (f": {_e(reason)}" if reason else "") + ". The figures below are what it recorded.</p>")


def render(page: ReportPage) -> str:
    run = page.run
    failing = sum(r["verdict"] == "fail" for r in page.records)
    errors = sum(r["verdict"] == "error" for r in page.records)
    timeouts = sum(r["verdict"] == "timeout" for r in page.records)
    title = (f"deploy parity: {len(page.records)} cases, {failing} failing" + (f", {errors} errors" if errors else "")
             + (f", {timeouts} timed out" if timeouts else ""))
    if run.get("status") not in (None, "complete"):
        title += f" ({run['status']})"
    regressions = len(page.history.get("regressions") or [])
    banner = f" &middot; <strong>{regressions} metric regression(s)</strong>" if regressions else ""
    nav = " &middot; ".join(f"<a href='#{a}'>{t}</a>" for a, t in (
        ("run", "run"), ("matrix", "matrix"), ("summary", "summary"), ("history", "trend"),
        ("diagnosis", "diagnosis"), ("pictures", "pictures"), ("errors", "errors"), ("bench", "benchmarks"), ("cases", "cases")))
    return "".join([
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_e(title)}</title><style>{_STYLE}</style><script>{_IMAGE_CHECK}</script></head><body>",
        f"<h1>{_e(title)}</h1>{_status_banner(run)}<p>{_e(run.get('started_at'))}{banner}</p><p>{nav}</p>",
        _run_section(page), _matrix_section(page), _summary_section(page), _history_section(page),
        _diagnosis_section(page), _pictures_section(page), _histogram_section(page), _bench_section(page),
        _overhead_bench_section(page),
        _cases_section(page),
        "</body></html>",
    ])


def render_progress(run: dict) -> str:
    """The page while a run is in progress: who runs, since when, how many cases so far.
    It stays if the run is killed outright, and says what that means."""
    counts = run.get("verdicts") or {}
    tally = ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts.get(v)) or "none yet"
    pid = run.get("pid")
    return "".join([
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>deploy parity: run in progress ({_e(run.get('cases', 0))} cases so far)</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>deploy parity: run in progress ({_e(run.get('cases', 0))} cases so far)</h1>",
        f"<p class='status running' id='status'>This run is <strong>running</strong>: started "
        f"{_e(run.get('started_at'))} by process {_e(pid)}; {_e(run.get('cases', 0))} case(s) recorded so far "
        f"({_e(tally)}), the last at {_e(run.get('updated_at'))}. Every recorded case is in "
        "<code>results.jsonl</code>. If process "
        f"{_e(pid)} is gone, the run was killed before its end; the next run on this directory marks it failed "
        "in the history.</p>",
        "<table>",
        f"<tr><th>run uid</th><td><code>{_e(run.get('run_uid'))}</code></td></tr>",
        f"<tr><th>command</th><td><code>{_e(run.get('command'))}</code></td></tr>",
        f"<tr><th>Hypothesis profile</th><td>{_e(run.get('hypothesis_profile'))}</td></tr>",
        "</table></body></html>",
    ])


def render_status_only(run: dict) -> str:
    """The smallest page that still tells the truth: written when the full report could
    not be (a full disk), so no earlier run's page is left claiming this run's place."""
    counts = run.get("verdicts") or {}
    tally = ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts.get(v))
    problems = "".join(f"<li><code>{_e(p)}</code></li>" for p in (run.get("report_problems") or [])[:5])
    return "".join([
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>deploy parity: run {_e(run.get('status'))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>deploy parity: run {_e(run.get('status'))} ({_e(run.get('cases', 0))} cases)</h1>",
        _status_banner(run),
        f"<p>run uid <code>{_e(run.get('run_uid'))}</code>, started {_e(run.get('started_at'))}"
        + (f"; verdicts: {_e(tally)}" if tally else "") + "</p>",
        f"<ul>{problems}</ul>" if problems else "",
        "</body></html>",
    ])


def write_status_page(run: dict, directory: Path) -> Path:
    return _replace_text(Path(directory) / "index.html", render_status_only(run))


def _replace_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a page
    return path


def write_page(page: ReportPage, directory: Path) -> Path:
    return _replace_text(Path(directory) / "index.html", render(page))


def write_progress_page(run: dict, directory: Path) -> Path:
    return _replace_text(Path(directory) / "index.html", render_progress(run))
