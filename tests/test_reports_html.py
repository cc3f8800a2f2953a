"""The HTML report: built from a real failing run, opened in a real headless chromium.

The browser test skips only where chromium is absent and this is not CI. In CI (CI=true,
or PARITY_REQUIRE_BROWSER=1, which .ci/run exports after installing chromium) a missing
browser fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Optional
from xml.etree import ElementTree

import pytest

from reports.history import HistoryStore, RunIdentity
from reports.html import ReportPage, render
from reports.run_report import _picture_order
from tests.suite_runs import run_suite

# Debian's chromium in a container: no sandbox (root), no GPU, no network, no first-run UI,
# and /tmp instead of a container's often tiny /dev/shm.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
FAILING_CASE = "h=64,w=96,batch=1,dtypes=float32,seed=0"  # pose-rtmo-broken's transposed grid shows here
ONLY_PARITY = "test_parity and not batch and not determinism and not refus"


def find_chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def browser_required() -> bool:
    flags = (os.environ.get("CI", ""), os.environ.get("PARITY_REQUIRE_BROWSER", ""))
    return any(flag.strip().lower() not in ("", "0", "false", "no") for flag in flags)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        if browser_required():
            pytest.fail("chromium is not installed but CI requires the browser test: .ci/run installs it "
                        "(apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI installs it and runs this test")
    return path


def run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """A fresh profile per call: no state from an earlier run, nothing shared between tests."""
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


class PageParts(HTMLParser):
    """What the test checks in the DOM chromium dumps after the page's load event."""

    def __init__(self):
        super().__init__()
        self.root_attrs: dict = {}
        self.images: list = []
        self.headings: list = []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.root_attrs = attrs
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag in ("h1", "h2"):
            self._in_heading = True
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag in ("h1", "h2"):
            self._in_heading = False

    def handle_data(self, data):
        if self._in_heading:
            self.headings[-1] += data


def plant_baseline(db: Path) -> None:
    """An earlier complete run whose keypoints were nearly right: the new run is a regression."""
    store = HistoryStore(db)
    try:
        uid = "planted-baseline"
        run_id = store.ensure_run(RunIdentity(str(db), uid, "2026-01-01T00:00:00+00:00", "replay", "pytest", 0),
                                  {"torch": "earlier", "device": "cpu"})
        store.record_case(run_id, {
            "model": "pose-rtmo-broken", "backend": "onnxrt-cpu", "precision": "fp32", "check": "parity",
            "height": 64, "width": 96, "batch": 1, "dtypes": ["float32"], "seed": 0, "verdict": "pass",
            "comparisons": [{"kind": "keypoints", "verdict": "pass", "metrics": {"max_px": 0.01}}]})
        store.finish_run(uid, "complete", 0, 1.0, 0.5)
    finally:
        store.close()


@pytest.fixture(scope="module")
def failing_report(tmp_path_factory):
    """A real run of the broken pose model on one failing case, after a planted good baseline."""
    tmp = tmp_path_factory.mktemp("html")
    db = tmp / "history.sqlite"
    plant_baseline(db)
    run = run_suite(tmp, "--model", "pose-rtmo-broken", "--backend", "onnxrt-cpu", "-k", ONLY_PARITY,
                    "--replay", FAILING_CASE, "--history-db", str(db), "--report-images", "20")
    assert run.returncode == 1, run.output[-3000:]  # the broken model fails
    return run


@pytest.mark.slow
def test_report_opens_in_chromium_with_every_image(chromium, failing_report, tmp_path):
    page = failing_report.reports_dir / "index.html"
    assert page.is_file(), failing_report.output[-2000:]
    dumped = run_chromium(chromium, tmp_path / "profile-dom", "--dump-dom", page.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    parts = PageParts()
    parts.feed(dumped.stdout)

    # The page loaded and its own script ran: every image decoded, none broken.
    total = int(parts.root_attrs.get("data-images-total", -1))
    assert total == len(parts.images) >= 3, parts.root_attrs  # case picture, error histogram, trend
    assert parts.root_attrs.get("data-images-loaded") == str(total), parts.root_attrs
    assert parts.root_attrs.get("data-images-broken") == ""
    # Every image the page references is a file next to it: the case pictures PNG, the two
    # figures SVG (XML with an intrinsic size, which chromium decoded above).
    for src in parts.images:
        image = (page.parent / src).resolve()
        assert image.is_file(), src
        assert page.parent.resolve() in image.parents  # nothing outside the report directory
        if src.endswith(".svg"):
            root = ElementTree.fromstring(image.read_bytes())
            assert root.tag == "{http://www.w3.org/2000/svg}svg" and float(root.get("width")) > 0, src
        else:
            assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    assert any(src.startswith("images/case-") for src in parts.images)
    assert {"images/errors.svg", "images/trend.svg"} <= set(parts.images)

    headings = " | ".join(parts.headings)
    cases = len(failing_report.records())  # the replayed parity case (and the coverage check, when selected)
    for heading in (f"deploy parity: {cases} cases, 1 failing", "Model x backend x precision", "Trend and regressions",
                    "Where the failures break", "Failing and ambiguous cases", "Error distribution",
                    "Every checked case"):
        assert heading in headings, headings
    text = dumped.stdout
    assert "1 metric regression(s)" in text and "pose-rtmo-broken" in text
    assert "harness overhead ratio" in text

    shot = tmp_path / "page.png"
    shown = run_chromium(chromium, tmp_path / "profile-shot", "--window-size=1280,2000", f"--screenshot={shot}",
                         page.as_uri())
    assert shown.returncode == 0 and shot.is_file() and shot.stat().st_size > 10_000, shown.stderr[-2000:]


@pytest.mark.slow
def test_terminal_and_run_json_show_the_regression_and_overhead(failing_report):
    assert "1 METRIC REGRESSION(S)" in failing_report.output
    assert "harness overhead ratio" in failing_report.output
    history = failing_report.run_summary["history"]
    [regression] = history["regressions"]
    assert (regression["model"], regression["metric"], regression["baseline"]) == ("pose-rtmo-broken", "max_px",
                                                                                   0.01)
    assert regression["current"] > 1.0 and "--replay" in regression["replay"]
    overhead = failing_report.run_summary["overhead"]
    assert overhead["wall_seconds"] >= overhead["inference_seconds"] > 0


@pytest.mark.parametrize("environ, required", [
    ({}, False), ({"CI": "true"}, True), ({"CI": "false"}, False), ({"PARITY_REQUIRE_BROWSER": "1"}, True),
    ({"CI": "", "PARITY_REQUIRE_BROWSER": "0"}, False)])
def test_browser_is_required_in_ci(monkeypatch, environ, required):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PARITY_REQUIRE_BROWSER", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert browser_required() is required


def test_page_escapes_record_text():
    record = {"model": "m<script>", "backend": "b", "precision": "fp32", "check": "parity", "height": 8,
              "width": 8, "batch": 1, "dtypes": ["float32"], "seed": 0, "verdict": "fail",
              "message": "<script>alert(1)</script>", "replay": "pytest 'x'", "comparisons": []}
    html = render(ReportPage(run={}, rows=[], records=[record]))
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "m&lt;script&gt;" in html


def test_benchmarks_show_when_bench_json_is_there(tmp_path):
    bench = {"created_at": "2026-01-01T00:00:00+00:00", "host": {"device": "cpu"}, "settings": {}, "results": [
        {"model": "pose-rtmo", "backend": "onnxrt-cpu", "precision": "fp32", "height": 192, "width": 192,
         "error": None, "cold": {"create_seconds": 0.03, "first_infer_seconds": 0.004},
         "warm": {"mean_ms": 1.6, "median_ms": 1.5, "p99_ms": 2.9, "runs": 50, "warmup_runs": 5},
         "throughput": [{"batch": 1, "images_per_second": 600.0}]},
        {"model": "pose-rtmo", "backend": "trt-fp16", "precision": None, "error": "unavailable: no GPU"}]}
    html = render(ReportPage(run={}, rows=[], records=[], bench=bench))
    assert "Latency benchmarks" in html and "cold: first infer ms" in html and "600.0" in html
    assert "unavailable: no GPU" in html
    assert "Latency benchmarks" not in render(ReportPage(run={}, rows=[], records=[]))


def test_pictures_go_to_failures_first_largest_error_first_without_replayed_duplicates():
    def record(verdict, max_px, seed):
        return {"model": "m", "backend": "b", "precision": "fp32", "check": "parity", "height": 8, "width": 8,
                "batch": 1, "dtypes": ["float32"], "seed": seed, "verdict": verdict,
                "comparisons": [{"metrics": {"max_px": max_px}}]}

    records = [record("ambiguous", 9.0, 1), record("fail", 1.0, 2), record("pass", 50.0, 3),
               record("fail", 5.0, 4), record("fail", 5.0, 4)]  # the last: Hypothesis replaying the same case
    assert _picture_order(records) == [3, 1, 0]
