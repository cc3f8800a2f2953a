"""Judging what a user's own artifact takes and what their case reads (issue 9, items 8-10).

A user exports a tiny detector with torch.onnx.export, as they would, and brings the
.onnx through a cases module (--model-module). The suite must fail at the start, with
one message naming both sides and the fix, when the artifact takes less than the case
declares (a fixed 1x3x160x160 graph for sides 64-256 and batch up to 4; a float32 graph
for a float32+uint8 case); pass the same case with a properly dynamic graph; name a
declared output that nothing compares; and record a check that raises as an ERROR.
"""

from __future__ import annotations

import json
import re
import textwrap

import pytest

from deploy_parity.contracts.bounds import ShapeBounds, case_bounds, coverage_gaps, describe_coverage_gaps
from deploy_parity.backends import BACKENDS
from deploy_parity.check import CaseResult, recorded
from deploy_parity.compare.case_outputs import ReadTracking, check_outputs_compared
from deploy_parity.compare.verdict import Verdict
from deploy_parity.errors import UnreadOutputError
from deploy_parity.registry import build_registry
from deploy_parity.strategies import ParityExample
from tests.suite_runs import run_suite
from tests.tiny_cases import export_user_graph, import_cases_module

USER_CASES = '''
"""A user's cases module: a tiny detector and the .onnx files they exported from it."""

from dataclasses import replace

import torch
from torch import nn

from deploy_parity.case import InputSpec, ModelCase, OutputSpec, SizeSpace
from deploy_parity.compare.instances import Instances

FIXED_ONNX = {fixed!r}
DYNAMIC_ONNX = {dynamic!r}


class TinyDetector(nn.Module):
    """images (N, 3, H, W) -> boxes (N, 2, 4) x1 y1 x2 y2 pixels, scores (N, 2), peak_gap (N, 2)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, images):
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 255.0
        features = self.conv(x)
        dets = torch.stack([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)  # (N, 2, 5)
        height, width = images.shape[-2], images.shape[-1]
        scale = torch.stack([torch.ones_like(dets[..., 0]) * width, torch.ones_like(dets[..., 0]) * height], -1)
        centre = torch.sigmoid(dets[..., 0:2]) * scale
        half = torch.sigmoid(dets[..., 2:4]) * scale * 0.25 + 1.0
        boxes = torch.cat([centre - half, centre + half], dim=-1)
        scores = torch.sigmoid(dets[..., 4])
        return boxes, scores, scores - scores.amin(dim=1, keepdim=True)


def build():
    return TinyDetector().eval()


def to_instances(outputs, index, image_size):
    return Instances(boxes=outputs["boxes"][index], scores=outputs["scores"][index], image_size=image_size)


def to_instances_square_only(outputs, index, image_size):
    height, width = image_size
    if height != width:
        raise ValueError(f"my reader assumes square images, got {{height}}x{{width}}")
    return to_instances(outputs, index, image_size)


MY_DET = ModelCase(
    name="my-det",
    description="a user's detector, their own dynamic export",
    build_reference=build,
    build_deploy=lambda target: build(),
    inputs=(InputSpec("images", "image", ("float32",)),),
    # The graph's third output is an auxiliary tensor: compared raw, never dropped.
    outputs=(OutputSpec("boxes", "boxes"), OutputSpec("scores", "scores"), OutputSpec("peak_gap", "raw")),
    sizes=SizeSpace(min_side=64, max_side=256, export_height=128, export_width=128),
    to_instances=to_instances,
    max_batch=4,
    onnx_path=DYNAMIC_ONNX,
)

CASES = [
    MY_DET,
    # (a) the default export of a fixed-size tool: 1x3x160x160, for a case of sides 64-256, batch up to 4
    replace(MY_DET, name="my-det-fixed", onnx_path=FIXED_ONNX),
    # (b) a float32 graph for a case that declares float32 and uint8 images
    replace(MY_DET, name="my-det-f32", inputs=(InputSpec("images", "image", ("float32", "uint8")),)),
    # (d) an auxiliary output declared as keypoints that to_instances never reads
    replace(MY_DET, name="my-det-unread", outputs=MY_DET.outputs[:2] + (OutputSpec("peak_gap", "keypoints"),)),
    # (e) a reader that crashes on rectangular images
    replace(MY_DET, name="my-det-crash", to_instances=to_instances_square_only),
]
'''


def _export(module, path, dynamic: bool) -> None:
    """What a user does: torch.onnx.export of their model, with or without dynamic axes."""
    import torch

    axes = None
    if dynamic:
        axes = {"images": {0: "batch", 2: "height", 3: "width"}, "boxes": {0: "batch"}, "scores": {0: "batch"},
                "peak_gap": {0: "batch"}}
    export_user_graph(module.build(), path, (torch.rand(1, 3, 160, 160),), ["images"],
                      ["boxes", "scores", "peak_gap"], axes)


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    """The user's cases module on disk, and the two graphs it names."""
    root = tmp_path_factory.mktemp("user")
    fixed, dynamic = root / "my_fixed.onnx", root / "my_dynamic.onnx"
    path = root / "my_cases.py"
    module = import_cases_module(path, USER_CASES.format(fixed=str(fixed), dynamic=str(dynamic)),
                                 "my_cases_for_export")
    _export(module, fixed, dynamic=False)
    _export(module, dynamic, dynamic=True)
    return path


def _outcome(output: str, test: str, model: str, backend: str = "onnxrt-cpu") -> str:
    match = re.search(rf"suites/test_parity\.py::{test}\[{re.escape(model)}@{backend}\] (PASSED|FAILED|SKIPPED|ERROR)",
                      output)
    return match.group(1) if match else "not run"


def _coverage_fails_saying(run, model: str, expected: str) -> list:
    """`model`'s coverage test FAILED and the run's output says `expected`: its coverage records."""
    assert expected in run.output, run.output[-4000:]
    assert _outcome(run.output, "test_artifact_covers_declared_inputs", model) == "FAILED"
    return [r for r in run.records() if r["model"] == model and r["check"] == "coverage"]


@pytest.fixture(scope="module")
def failing_run(user_module, tmp_path_factory):
    return run_suite(tmp_path_factory.mktemp("failing"), "-v", "--model-module", str(user_module),
                     "--model", "my-det-fixed,my-det-f32,my-det-unread,my-det-crash", "--backend", "onnxrt-cpu")


@pytest.mark.slow
def test_fixed_graph_of_a_dynamic_case_fails_naming_both_sides(failing_run, user_module):
    assert failing_run.returncode == 1, failing_run.output[-3000:]
    fixed = str(user_module.parent / "my_fixed.onnx")
    expected = (f"my-det-fixed on onnxrt-cpu: the artifact accepts less than the case declares: input 'images' is "
                f"fixed at 1x3x160x160 (graph {fixed}) but the case declares sides 64-256 and batch up to 4; export "
                "with dynamic axes, or declare the case fixed-size / max_batch=1 if that is intended")
    [record] = _coverage_fails_saying(failing_run, "my-det-fixed", expected)
    assert record["verdict"] == "fail" and record["message"] == expected
    assert (record["height"], record["width"], record["batch"]) == (160, 160, 1)


@pytest.mark.slow
def test_float32_graph_of_a_float32_and_uint8_case_fails(failing_run, user_module):
    dynamic = str(user_module.parent / "my_dynamic.onnx")
    expected = (f"my-det-f32 on onnxrt-cpu: the artifact accepts less than the case declares: input 'images' takes "
                f"float32 only (graph {dynamic}) but the case declares input 'images' as float32 or uint8; declare the "
                "case input 'images' with dtypes=('float32',) if that is intended")
    _coverage_fails_saying(failing_run, "my-det-f32", expected)
    # The gap is the coverage test's to report: the properties draw what the graph takes, and pass.
    assert _outcome(failing_run.output, "test_parity", "my-det-f32") == "PASSED", failing_run.output[-4000:]
    parity = [r for r in failing_run.records() if r["model"] == "my-det-f32" and r["check"] == "parity"]
    assert parity and all(r["dtypes"] == ["float32"] and r["verdict"] == "pass" for r in parity)


@pytest.mark.slow
def test_unread_declared_output_is_named_at_the_start(failing_run):
    expected = ("model case my-det-unread: output 'peak_gap' (kind keypoints) is declared but nothing compares it: "
                "to_instances never reads it; read it there, or declare it kind 'raw' to compare it as a tensor")
    [record] = _coverage_fails_saying(failing_run, "my-det-unread", expected)
    assert record["verdict"] == "error" and expected in record["message"]


@pytest.mark.slow
def test_a_check_that_raises_is_an_error_verdict(failing_run):
    output = failing_run.output
    records = [r for r in failing_run.records() if r["model"] == "my-det-crash"]
    errors = [r for r in records if r["verdict"] == "error"]
    assert errors, output[-4000:]
    for record in errors:
        assert record["message"].startswith("ValueError: my reader assumes square images, got ")
        assert "in to_instances_square_only" in record["message"]  # where it was raised
        assert record["replay"].startswith("pytest ") and "--replay" in record["replay"]
        assert record["comparisons"][0]["evidence"]["exception"] == "ValueError"
    assert any(r["verdict"] == "pass" for r in records)  # the square examples ran and passed
    assert _outcome(output, "test_parity", "my-det-crash") == "FAILED"
    assert "ValueError: my reader assumes square images" in output
    assert "re-run exactly this case: pytest" in output
    # The summary table has an error column, and counts them.
    header = next(line for line in output.splitlines() if line.startswith("model ") and " error " in line)
    column = header.split().index("error")
    row = next(line for line in output.splitlines() if line.startswith("my-det-crash ") and " parity " in line)
    assert int(row.split()[column]) == sum(r["check"] == "parity" for r in errors) > 0
    rows = [r for r in failing_run.run_summary["rows"] if r["model"] == "my-det-crash" and r["check"] == "parity"]
    assert rows[0]["error"] > 0
    page = (failing_run.reports_dir / "index.html").read_text()
    assert re.search(r"<title>deploy parity: \d+ cases, \d+ failing, \d+ errors</title>", page)
    assert '<td class="error">' in page and "ValueError: my reader assumes square images" in page


@pytest.mark.slow
def test_the_same_case_with_a_dynamic_graph_passes(user_module, tmp_path):
    run = run_suite(tmp_path, "-v", "--model-module", str(user_module), "--model", "my-det")
    assert run.returncode == 0, run.output[-4000:]
    records = run.records()
    coverage = [r for r in records if r["check"] == "coverage"]
    assert {r["backend"] for r in coverage} == {"torch-cpu", "onnxrt-cpu"}
    assert all(r["verdict"] == "pass" for r in coverage)
    checked = [r for r in records if r["check"] in ("parity", "batch")]
    assert any(r["height"] != r["width"] for r in checked) and any(r["batch"] > 1 for r in checked)
    assert _outcome(run.output, "test_batch_consistency", "my-det") == "PASSED"


# ------------------------------------------------------------------ the pieces, in process


def _pose():
    return build_registry().get("pose-rtmo")


def test_covering_bounds_have_no_gaps_for_every_zoo_case():
    registry = build_registry()
    for name in registry.names():
        case = registry.get(name)
        assert coverage_gaps(case, case_bounds(case)) == [], name


def test_engine_profile_narrower_than_the_case_is_a_gap():
    case = _pose()  # sides 64-320 in steps of 32, batch up to 4
    capped = ShapeBounds(min_side=64, max_side=192, multiple_of=32, max_aspect=4.0, max_batch=2,
                         source="trt engine profile")
    message = describe_coverage_gaps(case, "trt-fp16", capped)
    assert message == ("pose-rtmo on trt-fp16: the artifact accepts less than the case declares: input 'images' "
                       "takes sides 64-192, takes batch up to 2 (trt engine profile) but the case declares sides "
                       "64-320 and batch up to 4; build it for sides 64-320, export with a dynamic batch axis, or "
                       "declare the case sizes of 64-192 in its SizeSpace / max_batch=2 if that is intended")
    # Rounded to the stride, a range the same as the case's is no gap.
    rounded = ShapeBounds(min_side=60, max_side=330, multiple_of=32, max_aspect=4.0, max_batch=4)
    assert coverage_gaps(case, rounded) == []


def test_fixed_case_with_a_graph_of_another_size_is_a_gap():
    from dataclasses import replace

    case = replace(_pose(), spatial_binding="fixed")  # export size 192x192
    same = replace(case_bounds(case), min_batch=1, max_batch=4)
    assert coverage_gaps(case, same) == []
    other = replace(same, fixed_height=160, fixed_width=160, source="graph x.onnx")
    [gap] = coverage_gaps(case, other)
    assert (gap.accepted, gap.declared) == ("is fixed at 160x160 (HxW)", "the fixed size 192x192")


def test_read_tracking_sees_every_way_of_reading():
    outputs = {"boxes": 1, "scores": 2, "gap": 3}
    for read, expected in ((lambda o: o["boxes"], {"boxes"}), (lambda o: o.get("gap"), {"gap"}),
                           (lambda o: list(o.items()), set(outputs)), (lambda o: dict(o), set(outputs)),
                           (lambda o: {**o}, set(outputs)), (lambda o: ("gap" in o, list(o), len(o)), set())):
        tracked = ReadTracking(outputs)
        read(tracked)
        assert tracked.read == expected


def test_keypoint_rcnn_reads_its_peak_gap():
    """The zoo's auxiliary keypoints output is read into Instances.keypoint_peak_gap; a
    reader that left it out would be named."""
    from dataclasses import replace

    import numpy as np

    from deploy_parity.compare.instances import Instances

    case = build_registry().get("keypoint-rcnn")
    outputs = {"boxes": np.zeros((1, 4)), "scores": np.zeros(1), "labels": np.ones(1),
               "keypoints": np.zeros((1, 17, 3)), "keypoint_peak_gap": np.zeros((1, 17))}
    check_outputs_compared(case, outputs, outputs, (128, 128), 1)

    def without_gap(o, index, image_size):
        return Instances(boxes=o["boxes"], scores=o["scores"], labels=o["labels"], keypoints=o["keypoints"])

    with pytest.raises(UnreadOutputError, match=r"^model case keypoint-rcnn: output 'keypoint_peak_gap' \(kind "
                                                r"keypoints\) is declared but nothing compares it"):
        check_outputs_compared(replace(case, to_instances=without_gap), outputs, outputs, (128, 128), 1)


def test_errors_are_recorded_and_interrupts_are_not():
    case, backend = _pose(), BACKENDS["torch-cpu"]
    example = ParityExample(64, 96, 1, ("float32",), 0)

    @recorded("parity")
    def crashes(pool, case, backend, example):
        raise RuntimeError("ORT says no")

    result = crashes(None, case, backend, example)
    assert isinstance(result, CaseResult) and result.verdict == Verdict.ERROR
    assert result.message.startswith("RuntimeError: ORT says no (raised at test_artifact_coverage.py:")
    assert json.dumps(result.to_record())  # JSON-safe, traceback included
    assert "error" in result.summary().splitlines()[0]

    for stop in (KeyboardInterrupt, SystemExit):
        @recorded("parity")
        def interrupted(pool, case, backend, example, stop=stop):
            raise stop()

        with pytest.raises(stop):
            interrupted(None, case, backend, example)


class _ProfiledEngine:
    """Stands in for TensorRTRunner's read-back (no GPU here): the contract an engine built
    with the harness's own profile publishes, through the same code (trt/profiles.py)."""

    inference_seconds, inference_calls = 0.0, 0  # what a pool reads when it closes: it never ran

    def __init__(self, case, target):
        from deploy_parity.contracts import metas_for_case
        from deploy_parity.backends.tensorrt.profiles import derive_profile, metas_from_profile

        profile = derive_profile(case, target)
        dtypes = dict(zip(case.input_names, target.dtypes))
        self._metas = metas_from_profile(profile, dtypes, metas_for_case(case, target))

    def activate(self):
        return self

    def deactivate(self):
        pass

    def get_input_metadata(self):
        return self._metas

    def shape_bounds(self, case):
        from deploy_parity.backends.tensorrt.profiles import bounds_from_engine_metas

        return bounds_from_engine_metas(case, self._metas, source="engine profile")


@pytest.mark.parametrize("engine_path", [None, "my.engine"], ids=["built-per-size", "users-engine"])
def test_engine_bounds_of_a_per_size_case(engine_path, pool):
    """Engines the harness builds for a per-size case are one per size: together they take
    the case's sizes and dtypes (no gap, and strategies draw every size). The user's own
    engine is one file, for one size and one dtype: that is a gap."""
    from dataclasses import replace

    from deploy_parity.backends import Backend

    case = replace(_pose(), engine_path=engine_path)  # per-size, sides 64-320, float32 + uint8
    backend = Backend("fake-engine", "fp32", "an engine", lambda c, target, context: _ProfiledEngine(c, target),
                      artifact="engine")
    bounds = pool.bounds(case, backend)
    if engine_path is None:
        assert bounds.fixed_height is None and (bounds.min_side, bounds.max_side) == (64, 320)
        assert coverage_gaps(case, bounds) == []
    else:
        assert (bounds.fixed_height, bounds.fixed_width) == (192, 192)
        gaps = coverage_gaps(case, bounds)
        assert [g.declared for g in gaps] == ["sides 64-320 in steps of 32", "input 'images' as float32 or uint8"]
