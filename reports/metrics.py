"""The error figures a record's comparisons carry, and each record's worst of them.

The names live with the comparisons (deploy_parity.compare.verdict.ERROR_METRICS), so the summary table, the history store, the regression check
and the HTML report all read the same metrics the same way.
"""

from __future__ import annotations

import math
from typing import Optional

from deploy_parity.compare.verdict import ERROR_METRICS  # noqa: F401  (re-exported for the writers)


def metric_value(value) -> Optional[float]:
    """A metric as a float. Comparison.to_record writes NaN/inf as strings: a NaN error
    means the candidate produced garbage, so it counts as an infinitely large error."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return math.inf if value != value else float(value)
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "+inf", "-inf", "infinity"):
        return math.inf
    return None


def worst_errors(record: dict) -> dict:
    """{metric: worst value over the record's comparisons, or None when no comparison has it}."""
    worst = {}
    for metric in ERROR_METRICS:
        values = [metric_value(c.get("metrics", {}).get(metric)) for c in record.get("comparisons", [])]
        values = [v for v in values if v is not None]
        worst[metric] = max(values) if values else None
    return worst


def group_key(record: dict) -> tuple:
    """What a summary row, a trend line and a regression are about."""
    return (record["model"], record["backend"], record["precision"], record["check"])
