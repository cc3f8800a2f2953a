"""Figures for the HTML report: the error distribution and the nightly trend (PNG files).

matplotlib's object API (Figure + Agg canvas), never pyplot: no global figure state,
no display backend, safe inside pytest and xdist workers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from reports.metrics import ERROR_METRICS, worst_errors

# Errors span 1e-9 (fp32 rounding) to 1e3 px (a transposed grid): log-spaced bins, and
# exact zeros (bit-identical answers) counted apart, because log(0) has no bin.
_LOG_RANGE = (-9, 4)


def _figure(width: float, height: float):
    """A figure on its own Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


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
    figure = _figure(4.2 * len(metrics), 3.2)
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    # Exact zeros get their own bar, left of the log range, labelled "0".
    zero_at = _LOG_RANGE[0] - 1.0
    bins = np.concatenate([[zero_at - 0.25, zero_at + 0.25], np.arange(_LOG_RANGE[0], _LOG_RANGE[1] + 0.5, 0.5)])
    for ax, metric in zip(axes, metrics):
        backends = sorted(per_metric[metric])
        logs, zeros, infinite = [], 0, 0
        for backend in backends:
            values = np.asarray(per_metric[metric][backend], dtype=float)
            zeros += int((values == 0).sum())
            infinite += int(np.isinf(values).sum())
            finite = values[np.isfinite(values) & (values > 0)]
            logs.append(np.concatenate([np.full(int((values == 0).sum()), zero_at),
                                        np.clip(np.log10(finite), *_LOG_RANGE)]))
        ax.hist(logs, bins=bins, stacked=True, label=backends)
        extra = [f"{zeros} exactly 0"] + ([f"{infinite} NaN/inf"] if infinite else [])
        ax.set_title(f"{ERROR_METRICS[metric]}\n({', '.join(extra)})", fontsize=9)
        ticks = list(range(_LOG_RANGE[0], _LOG_RANGE[1] + 1, 2))
        ax.set_xticks([zero_at, *ticks], ["0", *(f"1e{t}" for t in ticks)], fontsize=7)
        ax.set_xlabel("error (log scale; exact zeros on the left)")
        ax.set_ylabel("cases")
        ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return True


def trend_plot(points: dict, path: Path) -> bool:
    """points: {(model, backend, precision, check, metric): [(run id, value), ...]}.

    One panel per metric, a line per group with at least two runs and a nonzero value
    (groups that are always exactly 0 carry no trend). False if nothing to draw.
    """
    from matplotlib.ticker import MaxNLocator

    lines = {k: sorted(v) for k, v in points.items()
             if len(v) >= 2 and any(value and not math.isinf(value) for _, value in v)}
    metrics = [m for m in ERROR_METRICS if any(k[4] == m for k in lines)]
    if not metrics:
        return False
    figure = _figure(5.0 * len(metrics), 3.6)
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for key, series in sorted(lines.items()):
            if key[4] != metric:
                continue
            runs = [run for run, _ in series]
            # Exact zeros drawn at 1e-9 so a group that leaves zero is visible on a log axis.
            values = [max(value, 1e-9) if value is not None and not math.isinf(value) else np.nan
                      for _, value in series]
            ax.plot(runs, values, marker="o", markersize=3, label=f"{key[0]} {key[1]} {key[3]}")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("run id")
        ax.set_title(ERROR_METRICS[metric], fontsize=9)
        ax.legend(fontsize=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return True
