"""Runners refuse bad feeds and bad artifacts with errors that name what is wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploy_parity.backends import BACKENDS, reference_runner
from deploy_parity.contracts import DimRange, TensorMeta
from deploy_parity.errors import ArtifactError, EmptyOutputError, InputContractError, UnsupportedShapeError
from deploy_parity.export.onnx_exporter import check_onnx, export_onnx
from deploy_parity.inputs import make_feed
from deploy_parity.registry import build_registry
from deploy_parity.backends.onnxruntime.runner import OnnxRuntimeRunner
from deploy_parity.backends.pytorch.runner import TorchRunner

HEIGHT, WIDTH = 64, 96


@pytest.fixture(scope="module")
def pose():
    return build_registry().get("pose-rtmo")


@pytest.fixture(scope="module")
def onnx_path(pose, module_pool):
    target = pose.deploy_target(HEIGHT, WIDTH, ("float32",))
    return export_onnx(pose, target, module_pool.context.export_options, module_pool.context.cache_dir)


@pytest.fixture(params=["onnxrt-cpu", "torch-cpu"])
def runner(request, pose, onnx_path, module_pool):
    """A runner on the module's cache, which holds onnx_path's export."""
    runner = BACKENDS[request.param].factory(pose, pose.deploy_target(HEIGHT, WIDTH, ("float32",)),
                                             module_pool.context)
    with runner:
        yield runner


def good_feed(pose):
    return make_feed(pose, HEIGHT, WIDTH, 2, seed=0, dtypes=("float32",))


def test_good_feed_runs(runner, pose):
    outputs = runner.infer(good_feed(pose))
    assert outputs["dets"].shape == (2, 20, 5)
    assert outputs["keypoints"].shape == (2, 20, 17, 3)


def test_wrong_dtype_is_named_never_cast(runner, pose):
    feed = {"images": good_feed(pose)["images"].astype(np.float64)}
    with pytest.raises(InputContractError, match=r"input 'images': wrong dtype; expected float32, got float64") as info:
        runner.infer(feed)
    assert info.value.input_name == "images"


def test_uint8_fed_to_a_float32_graph_is_refused(runner, pose):
    feed = make_feed(pose, HEIGHT, WIDTH, 1, seed=0, dtypes=("uint8",))
    with pytest.raises(InputContractError, match="expected float32, got uint8"):
        runner.infer(feed)


def test_wrong_input_name_is_named(runner, pose):
    feed = {"image": good_feed(pose)["images"]}
    with pytest.raises(InputContractError, match=r"input 'image': unknown input name; expected inputs \['images'\]"):
        runner.infer(feed)


def test_missing_input_is_named(runner):
    with pytest.raises(InputContractError, match="input 'images': input missing"):
        runner.infer({})


@pytest.mark.parametrize("shape", [(1, 3, HEIGHT, WIDTH + 32), (1, 3, WIDTH, HEIGHT), (1, 1, HEIGHT, WIDTH)])
def test_size_outside_the_graph_is_refused(runner, shape):
    feed = {"images": np.zeros(shape, dtype=np.float32)}
    with pytest.raises(UnsupportedShapeError, match=r"input 'images': dimension \d = \d+ must be \d+"):
        runner.infer(feed)


def test_batch_beyond_the_case_limit_is_refused(runner, pose):
    feed = {"images": np.zeros((pose.max_batch + 1, 3, HEIGHT, WIDTH), dtype=np.float32)}
    with pytest.raises(UnsupportedShapeError, match=rf"dimension 0 = {pose.max_batch + 1} outside \[1, {pose.max_batch}\]"):
        runner.infer(feed)


def test_wrong_rank_is_named(runner):
    with pytest.raises(InputContractError, match="input 'images': wrong rank"):
        runner.infer({"images": np.zeros((3, HEIGHT, WIDTH), dtype=np.float32)})


def test_reference_takes_every_declared_dtype_within_the_size_space(pose):
    with reference_runner(pose) as ref:
        for dtype in pose.inputs[0].dtypes:
            ref.infer(make_feed(pose, 64, 128, 1, seed=0, dtypes=(dtype,)))
        with pytest.raises(UnsupportedShapeError, match="not a multiple of 32"):
            ref.infer({"images": np.zeros((1, 3, 64, 100), dtype=np.float32)})
        with pytest.raises(UnsupportedShapeError, match=r"outside \[64, 320\]"):
            ref.infer({"images": np.zeros((1, 3, 32, 64), dtype=np.float32)})


def test_missing_onnx_is_an_artifact_error(tmp_path):
    runner = OnnxRuntimeRunner("missing", tmp_path / "nope.onnx")
    with pytest.raises(ArtifactError, match="nope.onnx: ONNX file not found"):
        runner.activate()


def test_corrupt_onnx_is_an_artifact_error(tmp_path, onnx_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(onnx_path.read_bytes()[: 2000])  # truncated download
    with pytest.raises(ArtifactError, match="corrupt.onnx"):
        check_onnx(corrupt)
    with pytest.raises(ArtifactError, match="corrupt.onnx: ONNX Runtime cannot load it"):
        OnnxRuntimeRunner("corrupt", corrupt).activate()


def test_graph_without_the_declared_outputs_is_refused(onnx_path):
    runner = OnnxRuntimeRunner("renamed", onnx_path, output_names=["boxes"])
    with pytest.raises(ArtifactError, match=r"graph lacks outputs \['boxes'\]"):
        runner.activate()


def test_empty_outputs_are_an_error():
    class NoOutputs(torch.nn.Module):
        def forward(self, x):
            return ()

    class OneOutput(torch.nn.Module):
        def forward(self, x):
            return x * 2

    metas = {"x": TensorMeta("x", ("float32",), (DimRange(1, 2, 1, "batch"), 3))}
    feed = {"x": np.zeros((1, 3), dtype=np.float32)}
    with TorchRunner("empty", NoOutputs, metas, ["y"]) as runner:
        with pytest.raises(EmptyOutputError, match="empty: the backend returned no outputs"):
            runner.infer(feed)
    with TorchRunner("short", OneOutput, metas, ["y", "z"]) as runner:
        with pytest.raises(EmptyOutputError, match=r"outputs \['z'\] missing"):
            runner.infer(feed)


class _TwoOutputs(torch.nn.Module):
    """A deploy module that returns one more output than its case declares."""

    def __init__(self, as_dict: bool):
        super().__init__()
        from tests.tiny_cases import TinyDetector

        self.inner = TinyDetector()
        self.as_dict = as_dict

    def forward(self, images):
        dets = self.inner(images)
        return {"dets": dets, "debug": dets * 2} if self.as_dict else (dets, dets * 2)


@pytest.mark.parametrize("as_dict", [False, True], ids=["tuple", "dict"])
def test_a_deploy_module_with_an_undeclared_output_is_an_error_on_every_backend(pool, as_dict):
    """Held to the reference's rule: an output nothing compares is never trimmed in silence,
    neither from the deploy module in PyTorch nor from the graph exported from it."""
    from dataclasses import replace

    from deploy_parity.check import CHECKS
    from deploy_parity.strategies import ParityExample
    from tests.tiny_cases import tiny_case

    case = replace(tiny_case("extra-output"), build_deploy=lambda target: _TwoOutputs(as_dict).eval())
    example = ParityExample(48, 64, 1, ("float32",), 0)
    for backend in ("torch-cpu", "onnxrt-cpu"):
        result = CHECKS["parity"](pool, case, BACKENDS[backend], example)
        assert result.verdict.value == "error", (backend, result.summary())
        text = result.summary()
        assert any(says in text for says in ("does not declare", "does not have", "returned 2 outputs")), text
