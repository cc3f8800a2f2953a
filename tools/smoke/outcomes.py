"""What the parity children wrote, read back and tabulated for the summary: the records
(results.jsonl), the per-test outcomes (JUnit XML, or the `pytest -v` log of a run killed
before it wrote one), test counts per model x backend and the worst errors per model x
precision. Every reader copes with a file cut short by a kill."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path


def read_jsonl(path: Path) -> list:
    """The records in `path`; a line cut short (or garbled) by a kill is skipped, not an error
    (unlike reports.jsonl.read_jsonl: a smoke run reads files whose writers it killed)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut short by a kill
                continue
    return records


_TEST_ID = re.compile(r"^(?P<test>[^\[]+)\[(?P<model>[^@\]]+)@(?P<backend>[^\]]+)\]$")


def read_junit(path: Path) -> list:
    if not path.is_file():
        return []
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return []
    tests = []
    for case in root.iter("testcase"):
        match = _TEST_ID.match(case.get("name", ""))
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (child.get("message") or child.text or "").strip().splitlines()[:1]
                message = message[0][:300] if message else ""
                break
        tests.append({"test": match["test"] if match else case.get("name"),
                      "model": match["model"] if match else None, "backend": match["backend"] if match else None,
                      "outcome": outcome, "message": message, "seconds": float(case.get("time") or 0)})
    return tests


_LOG_LINE = re.compile(r"::(?P<name>test_\w+\[[^\]]+\])(?:\s+(?P<outcome>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b"
                       r"(?P<rest>.*))?$")


def read_log_outcomes(path: Path) -> tuple:
    """Per-test outcomes from `pytest -v` output (when no JUnit XML was written), and the
    test that had started but not finished."""
    if not path.is_file():
        return [], None
    tests, running = [], None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _LOG_LINE.search(line.strip())
        if not match:
            continue
        if not match["outcome"]:
            running = match["name"]
            continue
        running = None
        case = _TEST_ID.match(match["name"])
        outcome = {"PASSED": "passed", "FAILED": "failed", "ERROR": "error", "SKIPPED": "skipped"}.get(
            match["outcome"], "passed")
        tests.append({"test": case["test"] if case else match["name"], "model": case["model"] if case else None,
                      "backend": case["backend"] if case else None, "outcome": outcome,
                      "message": (match["rest"] or "").strip()[:300], "seconds": None, "source": "log"})
    return tests, running


def count(values) -> dict:
    """{value: how many times}, in order of first appearance."""
    counts: dict = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def tests_by_model_backend(tests: list, runs: dict) -> list:
    rows: dict = {}
    for test in tests:
        if test["model"] is None:
            continue
        row = rows.setdefault((test["model"], test["backend"]), {
            "model": test["model"], "backend": test["backend"], "passed": 0, "failed": 0, "error": 0,
            "skipped": 0, "problems": []})
        row[test["outcome"]] += 1
        if test["outcome"] in ("failed", "error"):
            row["problems"].append(f"{test['test']}: {test['message']}")
    for row in rows.values():
        run = runs.get(row["backend"], {})
        row["status"] = ("ERROR" if row["error"] else "FAIL" if row["failed"] else
                         "skipped" if not row["passed"] else "pass")
        if run.get("timed_out"):
            row["status"] += " (run timed out)"
    return sorted(rows.values(), key=lambda r: (r["model"], r["backend"]))


def metric_value(value):
    """A record's metric as a float (NaN/inf are written as strings); None if absent.
    Not reports.metrics.metric_value, which turns a NaN into +inf on reading: here the
    caller tells a NaN minimum (an IoU over no pairs: left out) from a NaN error (+inf)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


# (output kind, metric in the comparison, tolerance field, "max" or "min", column label)
ERROR_COLUMNS = (
    ("keypoints", "max_px", "pixel", "max", "worst kpt px"),
    ("boxes", "max_corner_px", "corner_px", "max", "worst box corner px"),
    ("boxes", "max_score_abs", "score_abs", "max", "worst box score diff"),
    ("keypoints", "max_score_abs", "score_abs", "max", "worst kpt score diff"),
    ("boxes", "min_iou", "min_iou", "min", "min box IoU"),
    ("masks", "min_iou", "min_iou", "min", "min mask IoU"),
    ("tensor", "max_abs", "atol", "max", "worst tensor abs"),
)


def worst_by_model_precision(records: list) -> list:
    """Per (model, backend, precision, check): verdict counts and the worst of each metric,
    with the limit the record was judged against (the tolerance table's row, or a model's
    override) and the replay command of the worst case."""
    groups: dict = {}
    for record in records:
        key = (record.get("model"), record.get("backend"), record.get("precision"), record.get("check"))
        group = groups.setdefault(key, {"model": key[0], "backend": key[1], "precision": key[2], "check": key[3],
                                        "cases": 0, "verdicts": {}, "metrics": {}})
        group["cases"] += 1
        verdict = record.get("verdict")
        group["verdicts"][verdict] = group["verdicts"].get(verdict, 0) + 1
        for comparison in record.get("comparisons", []):
            kind = comparison.get("kind")
            for column_kind, metric, field, direction, label in ERROR_COLUMNS:
                if kind != column_kind:
                    continue
                raw = (comparison.get("metrics") or {}).get(metric)
                value = metric_value(raw)
                if value is None:
                    continue
                if math.isnan(value):
                    if direction == "min":  # a minimum over no pairs (nothing matched): nothing to report
                        continue
                    value = math.inf  # an error that is NaN: garbage in the candidate, the worst there is
                current = group["metrics"].get(label)
                worse = current is None or (value > current["value"] if direction == "max"
                                            else value < current["value"])
                if worse:
                    tolerance = comparison.get("tolerance") or {}
                    group["metrics"][label] = {
                        "value": value, "limit": tolerance.get(field), "direction": direction,
                        "limit_field": field, "rtol": tolerance.get("score_rtol") if "score" in field else None,
                        "tolerance_source": comparison.get("tolerance_source"),
                        "verdict": comparison.get("verdict"), "replay": record.get("replay"),
                        "size": f"{record.get('height')}x{record.get('width')}", "batch": record.get("batch")}
    return sorted(groups.values(), key=lambda g: (g["model"] or "", g["check"] or "", g["backend"] or ""))
