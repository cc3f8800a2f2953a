"""Each cause of a wrong localisation found on real graphs, reproduced on a small module
exported by torch.onnx exactly as the harness exports: the localiser must name the right
module or node, name both shapes where a size differs, and blame nothing on a correct
graph (deploy_parity/localize/)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from deploy_parity.localize import capture, first_divergent_module_in_graph, layer_row, run_with_intermediates
from deploy_parity.localize.modules import module_outputs_in_graph
from deploy_parity.localize.scopes import map_scopes, module_boundaries

ROW = dict(layer_row())


def export(module, example, path, opset=17):
    torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      opset_version=opset)
    return onnx.load(str(path))


def scale_initializer(model, name_part: str, factor: float = 1.05) -> str:
    """Scale the weight of the first node whose name contains `name_part`; its node name."""
    inits = {i.name: i for i in model.graph.initializer}
    node = next(n for n in model.graph.node if name_part in n.name and any(i in inits for i in n.input))
    init = inits[next(i for i in node.input if i in inits)]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
    return node.name


def search(module, model, x):
    """The module-level search of the export link, on the graph as given."""
    feed = {"x": x.numpy()}
    values = run_with_intermediates(model, feed)
    records, records64 = capture(module, [x]), capture(module, [x], float64=True)
    return first_divergent_module_in_graph(model.graph, values, records, feed, ROW, records64)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Linear(8, 8)
        self.ff = nn.Linear(8, 8)

    def forward(self, x):
        return self.ff(torch.relu(self.attn(x)))


class TwoBlocks(nn.Module):  # both blocks have an `attn` and an `ff`: one last name, two modules
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc = Block()
        self.dec = Block()

    def forward(self, x):
        return self.dec(self.enc(x)) * 2.0


def test_two_submodules_sharing_a_last_name_are_told_apart(tmp_path):
    module, x = TwoBlocks().eval(), torch.rand(2, 8)
    model = export(module, x, tmp_path / "blocks.onnx")
    assert search(module, model, x)[0] is None  # a correct graph: nothing blamed
    planted = scale_initializer(model, "/dec/attn/")
    layer, note = search(module, model, x)
    assert layer is not None, note
    assert layer["module"] == "dec.attn" and layer["node"] == planted and layer["inputs_agree"], layer


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(48, 8)

    def forward(self, x):
        return self.fc(x.flatten(1))


class WithHead(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = Head()
        self.post = nn.Linear(8, 4)

    def forward(self, x):
        return self.post(self.head(self.conv(x)))


def test_a_module_whose_last_scoped_node_is_not_its_output(tmp_path):
    """A node of the head's scope, placed last, that flattens the head's input (what the
    old mapping took for the head's output: "max abs error inf")."""
    module, x = WithHead().eval(), torch.rand(1, 3, 4, 4)
    model = export(module, x, tmp_path / "head.onnx")
    head_input = next(n.input[0] for n in model.graph.node if n.name.startswith("/head/") and n.op_type == "Flatten")
    model.graph.node.append(helper.make_node("Flatten", [head_input], ["head_side"], name="/head/Flatten_side", axis=1))
    model.graph.output.append(helper.make_tensor_value_info("head_side", onnx.TensorProto.FLOAT, None))
    feed = {"x": x.numpy()}
    values = run_with_intermediates(model, feed)
    records = capture(module, [x])
    scopes = map_scopes([n.name for n in model.graph.node], records.names)
    assert scopes.module_of["/head/Flatten_side"] == "head"
    status = module_outputs_in_graph(module_boundaries(model.graph, scopes), values, records, ROW,
                                     capture(module, [x], float64=True))
    assert status["head"].status == "agrees", status["head"]
    assert search(module, model, x)[0] is None
    planted = scale_initializer(model, "/head/fc/")
    layer, note = search(module, model, x)
    assert layer is not None and layer["module"] == "head.fc" and layer["node"] == planted, (layer, note)
    assert "inf" not in layer["difference"]


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)  # rewrites the conv's output tensor in place
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.out(self.relu(self.conv(x)))


def test_an_in_place_activation_after_a_recorded_output_does_not_rewrite_the_record(tmp_path):
    module, x = InPlace().eval(), torch.rand(1, 3, 8, 8) - 0.5
    model = export(module, x, tmp_path / "inplace.onnx")
    records = capture(module, [x])
    assert (records["conv"].outputs[0] < 0).any()  # the conv's own output, before the ReLU
    layer, note = search(module, model, x)
    assert layer is None, layer  # a correct graph: the conv must not be blamed
    planted = scale_initializer(model, "/conv/")
    layer, note = search(module, model, x)
    assert layer is not None and layer["module"] == "conv" and layer["node"] == planted, (layer, note)


class Upsample(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.up = Up()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(self.up(x))


class Up(nn.Module):
    def forward(self, x):
        return nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def test_a_resize_to_another_size_names_both_sizes(tmp_path):
    module, x = Upsample().eval(), torch.rand(1, 2, 16, 16)
    model = export(module, x, tmp_path / "up.onnx")
    assert search(module, model, x)[0] is None
    resize = next(n for n in model.graph.node if n.op_type == "Resize")
    scales = resize.input[2]
    constants = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    inits = {i.name: i for i in model.graph.initializer}
    new = numpy_helper.from_array(np.array([1, 1, 2.0625, 2.0625], dtype=np.float32), scales)
    if scales in inits:
        inits[scales].CopyFrom(new)
    else:
        constants[scales].attribute[0].t.CopyFrom(new)
    layer, note = search(module, model, x)
    assert layer is not None and layer["module"] == "up", (layer, note)
    from deploy_parity.localize import describe_layer

    text = describe_layer(layer)
    assert "1x2x33x33" in text and "1x2x32x32" in text, text  # the graph's size and the module's
    assert "the graph resizes 1x2x16x16 to 1x2x33x33" in text and "inf" not in text, text


def test_a_graph_without_scopes_is_not_localised_and_says_why(tmp_path):
    module, x = TwoBlocks().eval(), torch.rand(2, 8)
    model = export(module, x, tmp_path / "blocks.onnx")
    for i, node in enumerate(model.graph.node):
        node.name = f"n{i}"
    scale_initializer(model, "n3")
    layer, note = search(module, model, x)
    assert layer is None and note.startswith("not localised") and "scope" in note


# ------------------------------------------------------------ through the chain, on zoo graphs

def test_an_unscoped_node_inserted_in_a_users_graph_is_named(module_pool, tmp_path):
    from deploy_parity.backends import onnx_for
    from deploy_parity.registry import build_registry
    from deploy_parity.strategies import ParityExample
    from tests.test_localize import localise_case

    case = build_registry(wanted=["pose-rtmo"]).get("pose-rtmo")
    example = "h=128,w=192,batch=1,dtypes=float32,seed=0"
    parsed = ParityExample.parse(example)
    model = onnx.load(str(onnx_for(case, case.deploy_target(parsed.height, parsed.width, parsed.dtypes),
                                   module_pool.context)))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    tensor = convs[len(convs) // 2].output[0]
    for node in model.graph.node:
        node.input[:] = ["my_scaled" if i == tensor else i for i in node.input]
    model.graph.initializer.append(numpy_helper.from_array(np.float32(1.1), "my_factor"))
    at = next(i for i, n in enumerate(model.graph.node) if tensor in n.output) + 1
    model.graph.node.insert(at, helper.make_node("Mul", [tensor, "my_factor"], ["my_scaled"], name="my_mul"))
    edited = tmp_path / "users_rtmo.onnx"
    onnx.save(model, str(edited))

    found = localise_case(module_pool, replace(case, name="users-rtmo", onnx_path=edited), example)

    assert found.stage == "export", found.describe()
    assert found.layer["node"] == "my_mul" and found.layer["module"] is None, found.describe()
    assert found.layer["nearest_scope"] == "model." + convs[len(convs) // 2].name.strip("/").split("/")[-2], \
        found.describe()  # the full module path of the conv it follows
    assert "the export does not have" in found.describe()


ZOO = ["pose-rtmo", "detr-tiny", "keypoint-rcnn", "mask-rcnn", "mask-rcnn-fixed"]
REAL = ["tv-fcos", "tv-keypoint-rcnn", "tv-mask-rcnn", "yolo-pose", "yolo-seg"]


@pytest.mark.parametrize("name", ZOO + [pytest.param(n, marks=pytest.mark.slow) for n in REAL])
def test_the_localiser_blames_nothing_on_a_correct_export(module_pool, name):
    """The module-level search run directly on the harness's own (correct) graph, at a
    rectangle: every module agrees or is passed over, none is named."""
    from deploy_parity.backends import BACKENDS, onnx_for
    from deploy_parity.registry import build_registry
    from deploy_parity.strategies import ParityExample

    case = build_registry(wanted=[name]).get(name)
    bounds = module_pool.bounds(case, BACKENDS["onnxrt-cpu"])
    m = bounds.multiple_of
    h, w = (bounds.fixed_height, bounds.fixed_width) if bounds.fixed_height else (
        -(-bounds.min_side // m) * m, -(-int(bounds.min_side * 1.5) // m) * m)
    example = ParityExample(h, w, 1, bounds.default_dtypes(case), 3)
    target = case.deploy_target(h, w, example.dtypes)
    model = onnx.load(str(onnx_for(case, target, module_pool.context)))
    feed = module_pool.feed(case, example)
    module = case.build_deploy(target).eval()
    args = [torch.from_numpy(np.ascontiguousarray(feed[n])) for n in case.input_names]
    values = run_with_intermediates(model, feed)
    layer, note = first_divergent_module_in_graph(model.graph, values, capture(module, args), feed, ROW,
                                                  capture(module, args, float64=True))
    assert layer is None, (layer, note)


@pytest.mark.slow  # exports torchvision's Keypoint R-CNN
def test_torchvisions_traced_resize_is_named_with_both_sizes(module_pool):
    """The default transform resizes in float32 when traced and in float64 eagerly: the
    graph makes 127x127 of a 97x97 image where eager makes 128x128. The message says so."""
    from deploy_parity.registry import build_registry
    from tests.test_localize import localise_case

    case = build_registry(wanted=["tv-keypoint-rcnn-default-resize"]).get("tv-keypoint-rcnn-default-resize")
    found = localise_case(module_pool, case, "h=97,w=97,batch=1,dtypes=float32,seed=0")
    assert found.stage == "export" and found.layer["module"] == "detector.transform", found.describe()
    assert "the graph resizes 1x3x97x97 to 1x3x127x127" in found.describe(), found.describe()
    assert "the deploy module 1x3x97x97 to 1x3x128x128" in found.describe(), found.describe()
