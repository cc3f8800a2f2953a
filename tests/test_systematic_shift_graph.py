"""A half-pixel convention error planted in a user's graph is reported as a systematic shift.

The user exports a detector whose boxes are wider than 200 px (where +0.5 px on x moves
IoU by less than 0.005), then someone edits the graph with onnx's helper API to add
0.5 px to x1 and x2 of the box output, the way a deploy rewrite that mixes pixel-corner
and pixel-centre conventions would. The suite must fail, and say it is a consistent
shift in x over many points; the unedited graph must pass.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.suite_runs import PARITY_ONLY, run_suite
from tests.tiny_cases import export_user_graph, import_cases_module

pytestmark = pytest.mark.slow

USER_CASES = '''
import torch
from torch import nn

from deploy_parity.case import InputSpec, Judging, ModelCase, OutputSpec, SizeSpace
from deploy_parity.compare.instances import Instances


class WideBoxDetector(nn.Module):
    """images (N, 3, H, W) -> boxes (N, 4, 4) spanning most of the image, scores (N, 4)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 20, 3, padding=1)

    def forward(self, images):
        features = torch.sigmoid(self.conv(images).mean(dim=(2, 3))).reshape(-1, 4, 5)
        height, width = images.shape[-2], images.shape[-1]
        x1 = 10.0 + 10.0 * features[..., 0]
        y1 = 10.0 + 10.0 * features[..., 1]
        x2 = width - 10.0 - 10.0 * features[..., 2]
        y2 = height - 10.0 - 10.0 * features[..., 3]
        return torch.stack([x1, y1, x2, y2], dim=-1), features[..., 4]


def build():
    return WideBoxDetector().eval()


def to_instances(outputs, index, image_size):
    return Instances(boxes=outputs["boxes"][index], scores=outputs["scores"][index], image_size=image_size)


def case(name, onnx_path):
    return ModelCase(
        name=name,
        description="a user's wide-box detector, their own dynamic export",
        build_reference=build,
        build_deploy=lambda target: build(),
        inputs=(InputSpec("images", "image", ("float32",)),),
        outputs=(OutputSpec("boxes", "boxes"), OutputSpec("scores", "scores")),
        sizes=SizeSpace(min_side=240, max_side=320, export_height=256, export_width=256),
        to_instances=to_instances,
        max_batch=2,
        judging=Judging(score_threshold=0.2),
        onnx_path=onnx_path,
    )


CASES = [case("wide-boxes", {clean!r}), case("wide-boxes-half-pixel", {edited!r})]
'''


def plant_half_pixel_on_x(source: str, target: str) -> None:
    """boxes := boxes + [0.5, 0, 0.5, 0], added after the node that made them."""
    model = onnx.load(source)
    graph = model.graph
    producer = next(node for node in graph.node if "boxes" in node.output)
    producer.output[list(producer.output).index("boxes")] = "boxes_before_edit"
    offset = numpy_helper.from_array(np.array([0.5, 0.0, 0.5, 0.0], dtype=np.float32), name="half_pixel_x")
    graph.initializer.append(offset)
    graph.node.append(helper.make_node("Add", ["boxes_before_edit", "half_pixel_x"], ["boxes"], name="planted_shift"))
    onnx.checker.check_model(model)
    onnx.save(model, target)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("wide")
    clean, edited = root / "wide.onnx", root / "wide_half_pixel.onnx"
    path = root / "wide_cases.py"
    module = import_cases_module(path, USER_CASES.format(clean=str(clean), edited=str(edited)),
                                 "wide_cases_for_export")
    export_user_graph(module.build(), clean, (torch.rand(1, 3, 256, 256),), ["images"], ["boxes", "scores"],
                      {"images": {0: "batch", 2: "height", 3: "width"}, "boxes": {0: "batch"}, "scores": {0: "batch"}})
    plant_half_pixel_on_x(str(clean), str(edited))
    return run_suite(root, "-v", "--model-module", str(path), "--model", "wide-boxes,wide-boxes-half-pixel",
                     "--backend", "onnxrt-cpu", target=PARITY_ONLY)


def test_half_pixel_edit_fails_with_the_systematic_shift_message(run):
    assert "test_parity[wide-boxes-half-pixel@onnxrt-cpu] FAILED" in run.output, run.output[-3000:]
    assert "systematic shift +0.50 px in x over" in run.output, run.output[-3000:]
    shifts = [c for r in run.records() if r["model"] == "wide-boxes-half-pixel"
              for c in r["comparisons"] if c["kind"] == "shift"]
    assert shifts and shifts[0]["verdict"] == "fail"
    assert shifts[0]["metrics"]["shift_x_px"] == pytest.approx(0.5, abs=1e-4)
    assert abs(shifts[0]["metrics"]["shift_y_px"]) < 1e-4


def test_the_unedited_graph_passes(run):
    assert "test_parity[wide-boxes@onnxrt-cpu] PASSED" in run.output, run.output[-3000:]
    records = [r for r in run.records() if r["model"] == "wide-boxes"]
    assert records and all(r["verdict"] == "pass" for r in records)
    assert len({(r["height"], r["width"]) for r in records}) > 5  # many sizes, not one
