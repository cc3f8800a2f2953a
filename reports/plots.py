"""Figures for the HTML report: the error distribution and the nightly trend (SVG files).

Hand-written SVG, no plotting library: a report must not pay for importing and
rendering matplotlib twice (about 2 s) to draw a few hundred rectangles. The output is
plain XML text, deterministic (same input, same bytes: fixed orders, fixed number
formatting, no ids from clocks or counters), and every piece of text goes through
html.escape. Each bar and point carries a <title>, so hovering over it in a browser
that shows the SVG itself gives its exact count or value.

Colours are the Okabe-Ito palette (distinguishable with the common colour-vision
deficiencies); past eight series the colours repeat with a hatch (bars) or a dash
pattern (lines).
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from reports.metrics import ERROR_METRICS, worst_errors

# Errors span 1e-9 (fp32 rounding) to 1e3 px (a transposed grid): log-spaced bins, and
# exact zeros (bit-identical answers) counted apart, because log(0) has no bin. Values
# outside the range land in the end bins; NaN/inf (a garbage answer) get a bar of their own.
_LOG_RANGE = (-9, 4)
_BIN_WIDTH = 0.5  # decades
_ZERO_AT = _LOG_RANGE[0] - 1.0  # where the "exactly 0" bar stands, left of the log range
_INF_AT = _LOG_RANGE[1] + 1.0  # where the "NaN/inf" bar stands, right of it
_TREND_FLOOR = 1e-9  # exact zeros in the trend are drawn here, so a group that leaves zero shows

# Okabe & Ito (2008), "Color Universal Design"; yellow and black last (yellow is faint on
# white, black reads as an axis).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000")
_DASHES = (None, "6 3", "2 2", "8 3 2 3")
_FONT = "DejaVu Sans, Arial, Helvetica, sans-serif"


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _n(value: float) -> str:
    """A coordinate: one decimal, fixed format (deterministic bytes), no '-0.0'."""
    text = f"{float(value):.1f}"
    return "0.0" if text == "-0.0" else text


def _tag(name: str, attrs: dict, body: str = "") -> str:
    """An element; attribute order as given, None values left out, text escaped."""
    rendered = "".join(f' {key}="{_e(_n(value) if isinstance(value, float) else value)}"'
                       for key, value in attrs.items() if value is not None)
    return f"<{name}{rendered}>{body}</{name}>" if body else f"<{name}{rendered}/>"


def _title(text: str) -> str:
    return f"<title>{_e(text)}</title>"


def _text(x: float, y: float, text: str, size: float = 10, anchor: str = "middle", **extra) -> str:
    attrs = {"x": float(x), "y": float(y), "font-size": str(size), "text-anchor": anchor}
    attrs.update({key.replace("_", "-"): value for key, value in extra.items()})
    return _tag("text", attrs, _e(text))


def _text_width(text: str, size: float) -> float:
    """A sans-serif line's width, estimated (SVG has no text metrics without a renderer)."""
    return 0.6 * size * len(text)


def _document(width: float, height: float, body: list, label: str, defs: str = "") -> str:
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(width)}" height="{_n(height)}" '
            f'viewBox="0 0 {_n(width)} {_n(height)}" font-family="{_e(_FONT)}" role="img" '
            f'aria-label="{_e(label)}">')
    parts = [head, _title(label)]
    if defs:
        parts.append(f"<defs>{defs}</defs>")
    parts.append(_tag("rect", {"x": "0", "y": "0", "width": _n(width), "height": _n(height), "fill": "#ffffff"}))
    parts.extend(body)
    parts.append("</svg>\n")
    return "\n".join(parts)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def _unit(metric: str) -> str:
    """'worst keypoint error (px)' -> 'px'."""
    label = ERROR_METRICS[metric]
    return label[label.rfind("(") + 1:-1] if label.endswith(")") and "(" in label else ""


def _decade(exponent: int) -> str:
    return f"1e{exponent}"


def _edge(log_value: float) -> str:
    return f"{10.0 ** log_value:.3g}"


def _count_ticks(top: int) -> tuple:
    """Integer ticks 0..axis top, a 1/2/5 step, at most about six of them."""
    step = 1
    while top / step > 6:
        step = next((step * f for f in (2, 5) if top / (step * f) <= 6), step * 10)
    axis_top = max(step, math.ceil(top / step) * step)
    return axis_top, list(range(0, axis_top + 1, step))


def _hatches() -> str:
    """Diagonal hatch patterns, one per palette colour, for the ninth backend onwards."""
    return "".join(
        f'<pattern id="hatch{i}" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="{colour}"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="#ffffff" stroke-width="2.5"/></pattern>'
        for i, colour in enumerate(PALETTE))


def _bar_fill(index: int) -> str:
    return PALETTE[index % len(PALETTE)] if index < len(PALETTE) else f"url(#hatch{index % len(PALETTE)})"


def _legend_row(x: float, y: float, width: float, entries: list, size: float = 10) -> tuple:
    """[(label, swatch svg builder)] laid left to right, wrapping at width. -> (svg, height used)."""
    parts, cx, cy, row = [], x, y, 16
    for label, swatch in entries:
        needed = 18 + _text_width(label, size) + 14
        if cx > x and cx + needed > x + width:
            cx, cy = x, cy + row
        parts.append(swatch(cx, cy - 9))
        parts.append(_text(cx + 16, cy, label, size, anchor="start"))
        cx += needed
    return "".join(parts), cy - y + row


def error_histogram(records: list, path: Path) -> bool:
    """Per-case worst error, one panel per metric, stacked by backend. False if no metric."""
    per_metric = defaultdict(lambda: defaultdict(list))
    for record in records:
        for metric, value in worst_errors(record).items():
            if value is not None:
                per_metric[metric][record["backend"]].append(value)
    metrics = [m for m in ERROR_METRICS if per_metric.get(m)]
    if not metrics:
        return False
    # One colour per backend across all panels, so a backend reads the same everywhere.
    backends = sorted({backend for m in metrics for backend in per_metric[m]})
    fill = {backend: _bar_fill(i) for i, backend in enumerate(backends)}
    edges = np.arange(_LOG_RANGE[0], _LOG_RANGE[1] + _BIN_WIDTH / 2, _BIN_WIDTH)

    panel_w, panel_h = 420.0, 300.0
    left, right, top, bottom = 56.0, 14.0, 46.0, 50.0
    plot_w, plot_h = panel_w - left - right, panel_h - top - bottom
    body = []
    for p, metric in enumerate(metrics):
        # Bars: (slot, label) -> {backend: count}; slot is (lo, hi) in log10 units.
        zeros, infinite, counts = {}, {}, {}
        for backend in backends:
            values = np.asarray(per_metric[metric].get(backend, []), dtype=float)
            zeros[backend] = int((values == 0).sum())
            infinite[backend] = int(np.isinf(values).sum())
            finite = values[np.isfinite(values) & (values > 0)]
            counts[backend] = np.histogram(np.clip(np.log10(finite), *_LOG_RANGE), bins=edges)[0]
        zero_total, inf_total = sum(zeros.values()), sum(infinite.values())
        bars = [((_ZERO_AT - _BIN_WIDTH / 2, _ZERO_AT + _BIN_WIDTH / 2), "exactly 0", zeros)]
        for i in range(len(edges) - 1):
            lo, hi = float(edges[i]), float(edges[i + 1])
            if i == 0:
                span = f"below {_edge(hi)}"
            elif i == len(edges) - 2:
                span = f"at least {_edge(lo)} (finite)"
            else:
                span = f"in [{_edge(lo)}, {_edge(hi)})"
            bars.append(((lo, hi), span, {b: int(counts[b][i]) for b in backends}))
        if inf_total:
            bars.append(((_INF_AT - _BIN_WIDTH / 2, _INF_AT + _BIN_WIDTH / 2), "NaN/inf", infinite))
        x_lo = _ZERO_AT - 0.75
        x_hi = (_INF_AT + 0.75) if inf_total else (_LOG_RANGE[1] + 0.25)
        highest = max(sum(c.values()) for _, _, c in bars)
        y_top, y_ticks = _count_ticks(max(highest, 1))
        ox, oy = p * panel_w + left, top + plot_h  # plot origin (bottom left)

        def px(u, ox=ox, x_lo=x_lo, x_hi=x_hi):
            return ox + (u - x_lo) / (x_hi - x_lo) * plot_w

        def py(count, oy=oy, y_top=y_top):
            return oy - count / y_top * plot_h

        unit = _unit(metric)
        body.append(f'<g class="panel" data-metric="{_e(metric)}">')
        extra = [f"{zero_total} exactly 0"] + ([f"{inf_total} NaN/inf"] if inf_total else [])
        body.append(_text(ox + plot_w / 2, 16, ERROR_METRICS[metric], 12, font_weight="bold"))
        body.append(_text(ox + plot_w / 2, 32, f"({', '.join(extra)})", 10))
        for tick in y_ticks:  # grid and count axis
            y = py(tick)
            body.append(_tag("line", {"x1": ox, "y1": y, "x2": ox + plot_w, "y2": y, "stroke": "#e4e4e4"}))
            body.append(_tag("line", {"x1": ox - 4, "y1": y, "x2": ox, "y2": y, "stroke": "#333333"}))
            body.append(_text(ox - 7, y + 3.5, str(tick), 9, anchor="end"))
        for (lo, hi), span, by_backend in bars:
            total, base = sum(by_backend.values()), 0
            for backend in backends:
                count = by_backend.get(backend, 0)
                if not count:
                    continue
                x0, x1 = px(lo), px(hi)
                y0, y1 = py(base + count), py(base)
                tip = f"{backend}: {count} of {total} case(s) here, {ERROR_METRICS[metric]} {span}"
                body.append(_tag("rect", {"class": "bar", "data-backend": backend, "data-count": str(count),
                                          "x": x0, "y": y0, "width": max(x1 - x0 - 0.6, 0.5), "height": y1 - y0,
                                          "fill": fill[backend]}, _title(tip)))
                base += count
        # Exactly-0 and NaN/inf bars stand apart from the log range: a dashed break line each.
        for at in [_ZERO_AT + 0.5] + ([_INF_AT - 0.5] if inf_total else []):
            body.append(_tag("line", {"x1": px(at), "y1": oy - plot_h, "x2": px(at), "y2": oy,
                                      "stroke": "#888888", "stroke-dasharray": "3 3"}))
        body.append(_tag("rect", {"x": ox, "y": oy - plot_h, "width": plot_w, "height": plot_h,
                                  "fill": "none", "stroke": "#333333"}))
        x_ticks = [(_ZERO_AT, "0")] + [(float(d), _decade(d) if (d - _LOG_RANGE[0]) % 2 == 0 else "")
                                       for d in range(_LOG_RANGE[0], _LOG_RANGE[1] + 1)]
        if inf_total:
            x_ticks.append((_INF_AT, "NaN/inf"))
        for at, label in x_ticks:
            x = px(at)
            body.append(_tag("line", {"x1": x, "y1": oy, "x2": x, "y2": oy + (4 if label else 2.5),
                                      "stroke": "#333333"}))
            if label:
                body.append(_text(x, oy + 15, label, 9))
        apart = "exact zeros left, NaN/inf right" if inf_total else "exact zeros on the left"
        body.append(_text(ox + plot_w / 2, oy + 32, f"error ({unit + ', ' if unit else ''}log scale); {apart}", 10))
        body.append(_text(0, 0, "cases", 10, transform=f"translate({_n(ox - 38)} {_n(oy - plot_h / 2)}) rotate(-90)"))
        body.append("</g>")
    width = panel_w * len(metrics)
    legend, legend_h = _legend_row(left + 56, panel_h + 8, width - left - right - 56, [
        (backend, lambda x, y, b=backend: _tag("rect", {"x": x, "y": y, "width": 11.0, "height": 11.0,
                                                         "fill": fill[b]}))
        for backend in backends])
    body.append(f'<g class="legend">{_text(left, panel_h + 8, "backend:", 10, anchor="start")}{legend}</g>')
    height = panel_h + 8 + legend_h
    defs = _hatches() if len(backends) > len(PALETTE) else ""
    _write(path, _document(width, height, body, "Per-case worst error, log scale, stacked by backend", defs))
    return True


def _run_ticks(lo: int, hi: int) -> list:
    """Integer run-id ticks, a 1/2/5 step, at most about eight of them."""
    span, step = max(hi - lo, 1), 1
    while span / step > 8:
        step = next((step * f for f in (2, 5) if span / (step * f) <= 8), step * 10)
    first = math.ceil(lo / step) * step
    return list(range(first, hi + 1, step))


def trend_plot(points: dict, path: Path) -> bool:
    """points: {(model, backend, precision, check, metric): [(run id, value), ...]}.

    One panel per metric, a line per group with at least two runs and a nonzero value
    (groups that are always exactly 0 carry no trend). False if nothing to draw.
    """
    lines = {k: sorted(v) for k, v in points.items()
             if len(v) >= 2 and any(value and not math.isinf(value) for _, value in v)}
    metrics = [m for m in ERROR_METRICS if any(k[4] == m for k in lines)]
    if not metrics:
        return False
    plot_w, plot_h = 400.0, 240.0
    left, top, bottom, gap = 62.0, 40.0, 48.0, 14.0
    panels, x = [], 0.0
    for metric in metrics:
        groups = sorted(k for k in lines if k[4] == metric)
        labels = [f"{k[0]} {k[1]} {k[2]} {k[3]}" for k in groups]
        legend_w = 36 + max(_text_width(label, 9) for label in labels)
        panels.append((metric, groups, labels, x, legend_w))
        x += left + plot_w + gap + legend_w + 10
    width = x
    height = max(top + plot_h + bottom, max(top + 13 * len(p[1]) + 10 for p in panels))
    body = []
    for metric, groups, labels, x0, legend_w in panels:
        series = {}
        for key in groups:
            drawn = []
            for run, value in lines[key]:
                finite = value is not None and not math.isinf(value) and not math.isnan(value)
                drawn.append((run, value, max(value, _TREND_FLOOR) if finite else None))
            series[key] = drawn
        logs = [math.log10(v) for s in series.values() for _, _, v in s if v is not None]
        y_lo, y_hi = math.floor(min(logs)), math.ceil(max(logs))
        if y_hi == y_lo:
            y_hi += 1
        runs = [run for s in series.values() for run, _, _ in s]
        r_lo, r_hi = min(runs), max(runs)
        pad = max((r_hi - r_lo) * 0.04, 0.5)
        ox, oy = x0 + left, top + plot_h

        def px(run, ox=ox, lo=r_lo - pad, hi=r_hi + pad):
            return ox + (run - lo) / (hi - lo) * plot_w

        def py(value, oy=oy, y_lo=y_lo, y_hi=y_hi):
            return oy - (math.log10(value) - y_lo) / (y_hi - y_lo) * plot_h

        unit, skipped = _unit(metric), sum(v is None for s in series.values() for _, _, v in s)
        body.append(f'<g class="panel" data-metric="{_e(metric)}">')
        body.append(_text(ox + plot_w / 2, 16, ERROR_METRICS[metric], 12, font_weight="bold"))
        note = "exact zeros drawn at 1e-9" + (f"; {skipped} NaN/inf point(s) left out (gaps)" if skipped else "")
        body.append(_text(ox + plot_w / 2, 31, f"({note})", 9))
        decades = list(range(y_lo, y_hi + 1))
        every = max(1, math.ceil(len(decades) / 8))
        for d in decades:
            y = py(10.0 ** d)
            body.append(_tag("line", {"x1": ox, "y1": y, "x2": ox + plot_w, "y2": y, "stroke": "#e4e4e4"}))
            labelled = (d - y_lo) % every == 0
            body.append(_tag("line", {"x1": ox - (4 if labelled else 2.5), "y1": y, "x2": ox, "y2": y,
                                      "stroke": "#333333"}))
            if labelled:
                body.append(_text(ox - 7, y + 3.5, _decade(d), 9, anchor="end"))
        for run in _run_ticks(r_lo, r_hi):
            xx = px(run)
            body.append(_tag("line", {"x1": xx, "y1": oy, "x2": xx, "y2": oy + 4, "stroke": "#333333"}))
            body.append(_text(xx, oy + 15, str(run), 9))
        for i, (key, label) in enumerate(zip(groups, labels)):
            colour, dash = PALETTE[i % len(PALETTE)], _DASHES[(i // len(PALETTE)) % len(_DASHES)]
            path_d, pen_down, marks = [], False, []
            for run, value, drawn in series[key]:
                if drawn is None:
                    pen_down = False
                    continue
                path_d.append(f"{'L' if pen_down else 'M'}{_n(px(run))} {_n(py(drawn))}")
                pen_down = True
                shown = f"{value:.4g}{' ' + unit if unit else ''}"
                shown = f"exactly {shown} (drawn at 1e-9)" if value == 0 else shown
                marks.append(_tag("circle", {"class": "point", "data-run": str(run), "cx": px(run), "cy": py(drawn),
                                             "r": "3", "fill": colour},
                                  _title(f"{label}: run #{run}, worst error {shown}")))
            body.append(f'<g class="series" data-group="{_e(label)}">')
            body.append(_tag("path", {"d": " ".join(path_d), "fill": "none", "stroke": colour,
                                      "stroke-width": "1.5", "stroke-dasharray": dash}, _title(label)))
            body.extend(marks)
            body.append("</g>")
            ly = top + 13 * i + 4
            lx = ox + plot_w + gap
            body.append(_tag("line", {"x1": lx, "y1": ly, "x2": lx + 22, "y2": ly, "stroke": colour,
                                      "stroke-width": "1.5", "stroke-dasharray": dash}))
            body.append(_tag("circle", {"cx": lx + 11, "cy": ly, "r": "3", "fill": colour}))
            body.append(_text(lx + 28, ly + 3.5, label, 9, anchor="start"))
        body.append(_tag("rect", {"x": ox, "y": oy - plot_h, "width": plot_w, "height": plot_h,
                                  "fill": "none", "stroke": "#333333"}))
        body.append(_text(ox + plot_w / 2, oy + 34, "run id (complete runs in the history)", 10))
        y_label = f"worst error ({unit}, log scale)" if unit else "worst error (log scale)"
        body.append(_text(0, 0, y_label, 10,
                          transform=f"translate({_n(ox - 46)} {_n(oy - plot_h / 2)}) rotate(-90)"))
        body.append("</g>")
    _write(path, _document(width, height, body, "Worst error per group over the complete runs in the history"))
    return True
