"""Where a failure breaks: the stage and the first divergent layer, for every broken
variant of the zoo and for a user's graph edited by hand.

In-process on the examples the suites shrink to (tests/test_pose_suite_outcomes.py and
the zoo tests show the suites find them); one suite run checks the message end to end.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from deploy_parity.backends import BACKENDS, onnx_for
from deploy_parity.compare.case_outputs import compare_case_outputs
from deploy_parity.compare.verdict import Verdict, combine
from deploy_parity.localize import localise, node_scope
from deploy_parity.registry import build_registry
from deploy_parity.strategies import ParityExample
from tests.suite_runs import PARITY_ONLY, run_suite

REGISTRY = build_registry()

# broken variant -> (its shrunk example, stage, module path of the first divergent layer)
BROKEN = {
    # the prior grid is built in the deploy wrapper's own forward(): every submodule agrees
    "pose-rtmo-broken": ("h=64,w=96,batch=1,dtypes=float32,seed=0", "deploy rewrite", ""),
    "pose-rtmo-batch-broken": ("h=64,w=64,batch=2,dtypes=float32,seed=0", "deploy rewrite", ""),
    "detr-tiny-broken": ("h=64,w=64,batch=1,dtypes=float32+int64,seed=0", "deploy rewrite", ""),
    "keypoint-rcnn-broken": ("h=96,w=97,batch=1,dtypes=float32,seed=0", "deploy rewrite", ""),
    # the configured image size reaches the anchors first: the RPN's inputs agree, its output does not
    "mask-rcnn-broken": ("h=96,w=96,batch=1,dtypes=float32,seed=0", "deploy rewrite", "detector.rpn"),
}


def localise_case(pool, case, replay, backend="onnxrt-cpu"):
    example = ParityExample.parse(replay)

    def agrees(left, right, backend_name, precision):
        comparisons = compare_case_outputs(case, left, right, backend=backend_name, precision=precision,
                                           image_size=(example.height, example.width), batch=example.batch)
        return combine(c.verdict for c in comparisons) not in (Verdict.FAIL, Verdict.ERROR)

    return localise(pool, case, BACKENDS[backend], example, agrees)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_broken_variant_is_attributed_to_its_stage_and_module(module_pool, name):
    replay, stage, module = BROKEN[name]
    found = localise_case(module_pool, REGISTRY.get(name), replay)
    assert found.stage == stage, found.describe()
    assert found.layer is not None and found.layer["module"] == module, found.describe()
    assert found.layer["inputs_agree"], found.describe()
    assert found.seconds < 60


def test_the_fixed_models_break_nowhere(module_pool):
    found = localise_case(module_pool, REGISTRY.get("pose-rtmo"), BROKEN["pose-rtmo-broken"][0])
    assert found.stage is None and found.layer is None, found.describe()


def test_a_conv_scaled_in_a_users_graph_is_named_and_blamed_on_the_export(module_pool, tmp_path):
    case = REGISTRY.get("detr-tiny")
    example = "h=96,w=128,batch=1,dtypes=float32+int64,seed=3"
    parsed = ParityExample.parse(example)
    source = onnx_for(case, case.deploy_target(parsed.height, parsed.width, parsed.dtypes), module_pool.context)
    model = onnx.load(str(source))
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    conv = convs[len(convs) // 2]  # one in the middle of the backbone
    weights = next(init for init in model.graph.initializer if init.name == conv.input[1])
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * np.float32(1.05), weights.name))
    edited = tmp_path / "users_detr.onnx"
    onnx.save(model, str(edited))
    before = edited.read_bytes()

    found = localise_case(module_pool, replace(case, name="users-detr", onnx_path=edited), example)

    assert found.stage == "export", found.describe()
    assert found.layer["node"] == conv.name, found.describe()
    assert found.layer["module"].endswith(node_scope(conv.name)), found.describe()
    assert found.layer["op"] == "Conv" and found.layer["inputs_agree"]
    assert edited.read_bytes() == before  # the user's file is never modified


def test_node_scopes_follow_the_exporters_names():
    assert node_scope("/stem/stem.0/stem.0.0/Conv") == "stem.0.0"
    assert node_scope("/Cast") == ""
    assert node_scope("Conv_12") is None


@pytest.mark.slow
def test_a_failing_suite_reports_stage_layer_and_the_most_severe_example(tmp_path):
    run = run_suite(tmp_path, "--model", "pose-rtmo-broken", "--backend", "onnxrt-cpu", target=PARITY_ONLY)
    assert run.returncode == 1, run.output[-3000:]
    assert "stage: the deploy rewrite breaks" in run.output, run.output[-3000:]
    assert "first divergent layer: module '' (the root: the deploy module's own forward()" in run.output
    assert "the most severe seen:" in run.output
    diagnosed = [r for r in run.records() if "localisation" in r]
    assert len(diagnosed) == 1  # once per failing test, on its final example
    assert diagnosed[0]["localisation"]["stage"] == "deploy rewrite"
    assert diagnosed[0]["most_severe"]["worst_error"] > diagnosed[0]["comparisons"][0]["metrics"].get("max_corner_px", 0)


def test_module_outputs_held_by_plain_objects_are_seen_once():
    """torchvision's transform returns an ImageList (a plain object holding the padded
    batch): its tensors are the transform's output; cycles and modules are not followed."""
    import torch
    from torchvision.models.detection.image_list import ImageList

    from deploy_parity.localize.modules import reads_the_feed
    from deploy_parity.localize.tensors import leaves

    batch = torch.rand(1, 3, 8, 12)
    images = ImageList(batch, [(8, 12)])
    assert [t is batch for t in leaves((images, None))] == [True]
    images.me = images  # a cycle
    assert len(leaves(images)) == 1
    assert leaves((torch.nn.Linear(1, 1), "x", 3)) == []
    feed = {"images": batch.numpy()}
    assert reads_the_feed([batch[0].numpy()], feed) and reads_the_feed([batch.numpy()], feed)
    assert not reads_the_feed([batch[0].numpy() + 1], feed) and not reads_the_feed([], feed)


@pytest.mark.slow  # exports torchvision's Keypoint R-CNN
def test_a_conv_scaled_past_torchvisions_transform_is_named_not_the_transform(module_pool, tmp_path):
    """The transform's output is compared (an ImageList), so it must agree when the break
    lies later: a backbone conv scaled in a user's tv-keypoint-rcnn graph is named."""
    case = REGISTRY.get("tv-keypoint-rcnn")
    example = "h=128,w=160,batch=1,dtypes=float32,seed=3"
    parsed = ParityExample.parse(example)
    source = onnx_for(case, case.deploy_target(parsed.height, parsed.width, parsed.dtypes), module_pool.context)
    model = onnx.load(str(source))
    convs = [node for node in model.graph.node if node.op_type == "Conv" and "backbone" in node.name]
    conv = convs[len(convs) // 2]
    weights = next(init for init in model.graph.initializer if init.name == conv.input[1])
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * np.float32(1.05), weights.name))
    edited = tmp_path / "users_keypoint_rcnn.onnx"
    onnx.save(model, str(edited))

    found = localise_case(module_pool, replace(case, name="users-kprcnn", onnx_path=edited), example)

    assert found.stage == "export", found.describe()
    assert found.layer["node"] == conv.name, found.describe()
    assert "transform" not in found.layer["module"] and found.layer["inputs_agree"], found.describe()
