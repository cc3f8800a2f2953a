"""The report's two figures (reports/plots.py): hand-written SVG, read back as XML.

Each test draws from inputs whose answer is known (worst errors per backend, values
per run) and checks the drawing carries it: which backend's bars stand in which bin,
the count of exact zeros, one point per run, the hover text. The figures must be
valid XML and the same input must give the same bytes.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

from reports.html import ReportPage, render
from reports.plots import PALETTE, error_histogram, trend_plot

SVG = "{http://www.w3.org/2000/svg}"


def record(backend: str, *comparisons: dict, model: str = "pose-rtmo") -> dict:
    return {"model": model, "backend": backend, "precision": "fp32", "check": "parity",
            "comparisons": [{"kind": "keypoints", "metrics": metrics} for metrics in comparisons]}


def parse(path) -> ET.Element:
    root = ET.fromstring(path.read_text(encoding="utf-8"))  # raises on anything that is not XML
    assert root.tag == f"{SVG}svg"
    assert float(root.get("width")) > 0 and float(root.get("height")) > 0  # <img> needs an intrinsic size
    return root


def panels(root: ET.Element) -> dict:
    return {g.get("data-metric"): g for g in root.iter(f"{SVG}g") if g.get("class") == "panel"}


def texts(element: ET.Element) -> list:
    return [t.text for t in element.iter(f"{SVG}text")]


def tip(element: ET.Element) -> str:
    return element.find(f"{SVG}title").text


# Worst keypoint error per case (the larger of a record's comparisons is the one counted):
#   onnxrt-cpu: 0, 0, 1e-3 (worst of 1e-5 and 1e-3), 5e-7
#   trt-fp16:   0, NaN (a garbage answer), 2e-3 (worst of 2e-3 and 0)
# and raw tensor errors for trt-fp16 only.
KNOWN = [
    record("onnxrt-cpu", {"max_px": 0.0}),
    record("onnxrt-cpu", {"max_px": 0.0}),
    record("onnxrt-cpu", {"max_px": 1e-5}, {"max_px": 1e-3}),
    record("onnxrt-cpu", {"max_px": 5e-7}),
    record("trt-fp16", {"max_px": 0.0}, {"max_abs": 0.25}),
    record("trt-fp16", {"max_px": "nan"}, {"max_abs": 0.3}),
    record("trt-fp16", {"max_px": 2e-3}, {"max_px": 0.0}),
    record("trt-fp16", {"note": "no error metric"}),  # counted nowhere
]


def bars(panel: ET.Element) -> list:
    return [r for r in panel.iter(f"{SVG}rect") if r.get("class") == "bar"]


def test_histogram_has_each_backends_bars_in_the_right_bins_and_the_zeros_apart(tmp_path):
    path = tmp_path / "images" / "errors.svg"
    assert error_histogram(KNOWN, path) is True
    root = parse(path)
    drawn = panels(root)
    assert list(drawn) == ["max_px", "max_abs"]  # no box metric in the records: no empty panel

    keypoints = drawn["max_px"]
    assert "worst keypoint error (px)" in texts(keypoints)
    assert "(3 exactly 0, 1 NaN/inf)" in texts(keypoints)
    by_bin: dict = {}
    for bar in bars(keypoints):
        span = tip(bar).split("worst keypoint error (px) ")[1]
        by_bin.setdefault(span, {})[bar.get("data-backend")] = int(bar.get("data-count"))
        assert tip(bar).startswith(f"{bar.get('data-backend')}: {bar.get('data-count')} of ")
    assert by_bin == {
        "exactly 0": {"onnxrt-cpu": 2, "trt-fp16": 1},
        "in [0.001, 0.00316)": {"onnxrt-cpu": 1, "trt-fp16": 1},
        "in [3.16e-07, 1e-06)": {"onnxrt-cpu": 1},
        "NaN/inf": {"trt-fp16": 1},
    }
    # The zero bar stands left of every log-range bar, the NaN/inf bar right of them.
    x = {span: min(float(b.get("x")) for b in bars(keypoints) if span in tip(b)) for span in by_bin}
    assert x["exactly 0"] < x["in [3.16e-07, 1e-06)"] < x["in [0.001, 0.00316)"] < x["NaN/inf"]
    # Stacked: in a shared bin the two backends' bars touch, the taller stack reaching higher.
    shared = sorted((b for b in bars(keypoints) if "[0.001," in tip(b)), key=lambda b: b.get("data-backend"))
    assert math.isclose(float(shared[1].get("y")) + float(shared[1].get("height")), float(shared[0].get("y")))
    # Log-decade ticks and axis labels with the unit.
    labels = texts(keypoints)
    assert {"0", "1e-9", "1e-3", "1e3", "NaN/inf", "cases"} <= set(labels)
    assert any(label.startswith("error (px, log scale)") for label in labels)

    raw = drawn["max_abs"]
    assert "(0 exactly 0)" in texts(raw) and "NaN/inf" not in texts(raw)  # no NaN/inf bar when there is none
    assert {(b.get("data-backend"), b.get("data-count")) for b in bars(raw)} == {("trt-fp16", "2")}

    # The legend names each backend once, in its own colour-blind-safe colour, the colour its bars have.
    legend = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "legend")
    assert [t for t in texts(legend) if t != "backend:"] == ["onnxrt-cpu", "trt-fp16"]
    swatches = [r.get("fill") for r in legend.iter(f"{SVG}rect")]
    assert swatches == list(PALETTE[:2])
    for bar in bars(keypoints) + bars(raw):
        assert bar.get("fill") == PALETTE[["onnxrt-cpu", "trt-fp16"].index(bar.get("data-backend"))]


def test_histogram_is_deterministic_escaped_and_false_with_nothing_to_draw(tmp_path):
    assert error_histogram(KNOWN, tmp_path / "a.svg") and error_histogram(list(KNOWN), tmp_path / "b.svg")
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()

    odd = [record("b<&>\"'", {"max_px": 1.0})]
    assert error_histogram(odd, tmp_path / "odd.svg")
    text = (tmp_path / "odd.svg").read_text()
    assert "b<&>" not in text and "b&lt;&amp;&gt;" in text
    [bar] = bars(parse(tmp_path / "odd.svg"))
    assert bar.get("data-backend") == "b<&>\"'"  # the escaped text reads back as the name

    # Nine backends: the ninth repeats a colour, so it is hatched (and the hatch is defined).
    many = [record(f"backend-{i}", {"max_px": 1e-3}) for i in range(9)]
    assert error_histogram(many, tmp_path / "many.svg")
    root = parse(tmp_path / "many.svg")
    fills = [b.get("fill") for b in sorted(bars(root), key=lambda b: b.get("data-backend"))]
    assert len(set(fills)) == 9 and fills[8].startswith("url(#hatch")
    assert fills[8][5:-1] in {p.get("id") for p in root.iter(f"{SVG}pattern")}

    nothing = tmp_path / "none.svg"
    assert error_histogram([], nothing) is False
    assert error_histogram([record("onnxrt-cpu", {"note": 1})], nothing) is False
    assert not nothing.exists()


def points_of(panel: ET.Element) -> dict:
    by_group = {}
    for series in panel.iter(f"{SVG}g"):
        if series.get("class") == "series":
            circles = [c for c in series.iter(f"{SVG}circle") if c.get("class") == "point"]
            by_group[series.get("data-group")] = circles
    return by_group


TREND = {
    ("pose-rtmo", "onnxrt-cpu", "fp32", "parity", "max_px"): [(5, 0.02), (3, 0.0), (4, 0.5)],
    ("pose-rtmo", "trt-fp16", "fp16", "parity", "max_px"): [(3, 1e-4), (4, math.inf), (5, 2e-4), (6, 3e-4)],
    ("pose-rtmo", "torch-cpu", "fp32", "parity", "max_px"): [(3, 0.0), (4, 0.0)],  # always 0: no trend
    ("pose-rtmo", "trt-fp32", "fp32", "parity", "max_px"): [(6, 0.1)],  # one run: no line
    ("det-yolo", "onnxrt-cpu", "fp32", "parity", "max_abs"): [(4, 1e-6), (6, 1e-2)],
}


def test_trend_has_one_point_per_run_and_a_gap_for_nan(tmp_path):
    path = tmp_path / "trend.svg"
    assert trend_plot(TREND, path) is True
    root = parse(path)
    drawn = panels(root)
    assert list(drawn) == ["max_px", "max_abs"]
    keypoints = points_of(drawn["max_px"])
    assert sorted(keypoints) == ["pose-rtmo onnxrt-cpu fp32 parity", "pose-rtmo trt-fp16 fp16 parity"]

    cpu = keypoints["pose-rtmo onnxrt-cpu fp32 parity"]
    assert [c.get("data-run") for c in cpu] == ["3", "4", "5"]  # one per run, in run order
    assert [tip(c) for c in cpu] == [
        "pose-rtmo onnxrt-cpu fp32 parity: run #3, worst error exactly 0 px (drawn at 1e-9)",
        "pose-rtmo onnxrt-cpu fp32 parity: run #4, worst error 0.5 px",
        "pose-rtmo onnxrt-cpu fp32 parity: run #5, worst error 0.02 px"]
    x = [float(c.get("cx")) for c in cpu]
    y = [float(c.get("cy")) for c in cpu]
    assert x[0] < x[1] < x[2]
    assert y[1] < y[2] < y[0]  # 0.5 highest, then 0.02, the zero (at 1e-9) lowest
    # log scale: 0.5 and 0.02 are log10(25) decades apart, 1e-9 and 0.02 log10(2e7)
    assert math.isclose((y[2] - y[1]) / (y[0] - y[2]), math.log10(25) / math.log10(2e7), rel_tol=0.02)

    trt = keypoints["pose-rtmo trt-fp16 fp16 parity"]
    assert [c.get("data-run") for c in trt] == ["3", "5", "6"]  # the inf run is left out ...
    trt_line = next(s for s in drawn["max_px"].iter(f"{SVG}g") if s.get("data-group", "").startswith("pose-rtmo trt"))
    assert len(re.findall("M", trt_line.find(f"{SVG}path").get("d"))) == 2  # ... as a gap in the line
    assert "1 NaN/inf point(s) left out" in " ".join(texts(drawn["max_px"]))

    # Axes: run ids on x, log decades on y, with the metric's unit; a legend entry per line.
    labels = texts(drawn["max_px"])
    assert {"3", "4", "5", "6", "1e-9", "1e-1"} <= set(labels)
    assert "worst error (px, log scale)" in labels and "run id (complete runs in the history)" in labels
    assert "pose-rtmo torch-cpu fp32 parity" not in labels and "pose-rtmo trt-fp32 fp32 parity" not in labels
    assert [c.get("data-run") for c in points_of(drawn["max_abs"])["det-yolo onnxrt-cpu fp32 parity"]] == ["4", "6"]
    colours = {c.get("fill") for circles in keypoints.values() for c in circles}
    assert len(colours) == 2 and colours <= set(PALETTE)


def test_trend_is_deterministic_and_false_with_nothing_to_draw(tmp_path):
    assert trend_plot(TREND, tmp_path / "a.svg")
    assert trend_plot(dict(reversed(list(TREND.items()))), tmp_path / "b.svg")
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()
    flat = {k: v for k, v in TREND.items() if k[1] in ("torch-cpu", "trt-fp32")}
    assert trend_plot(flat, tmp_path / "none.svg") is False and trend_plot({}, tmp_path / "none.svg") is False
    assert not (tmp_path / "none.svg").exists()


def test_page_shows_the_svg_figures_and_links_them(tmp_path):
    page = render(ReportPage(run={}, rows=[], records=[], history={"db": "h.sqlite"},
                             histogram="images/errors.svg", trend="images/trend.svg"))
    for name in ("errors", "trend"):
        assert f"<a href='images/{name}.svg'><img src='images/{name}.svg'" in page
    assert ".png" not in page
