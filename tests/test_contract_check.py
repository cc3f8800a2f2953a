"""The input contract check before any run, against REAL ONNX metadata.

A tiny module with a float32 image, an int32 size input and an int64 size input is
exported with the TorchScript exporter; the check reads the graph with onnx.load alone
and must catch int64 fed where the graph binds int32 (bug class 2), and the reverse,
naming the input, plus rank and shape/profile problems.
"""

from __future__ import annotations

import pytest
import torch

from deploy_parity.case import DeployTarget, InputSpec, ModelCase, OutputSpec, SizeSpace
from deploy_parity.contracts.artifact import (
    assert_input_contract,
    check_input_contract,
    compare_metas,
    onnx_input_metas,
)
from deploy_parity.contracts import DimRange, TensorMeta, metas_for_case
from deploy_parity.errors import ArtifactError, InputContractError, UnsupportedShapeError
from deploy_parity.backends.onnxruntime.runner import OnnxRuntimeRunner

HEIGHT, WIDTH = 64, 96


class TwoSizeInputs(torch.nn.Module):
    """boxes = mean brightness x orig_target_sizes (int32) + crop_sizes (int64)."""

    def forward(self, images, orig_target_sizes, crop_sizes):
        brightness = images.mean(dim=(1, 2, 3)).unsqueeze(1)
        return brightness * orig_target_sizes.float() + crop_sizes.float()


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("contract") / "two_sizes.onnx"
    args = (
        torch.rand(2, 3, HEIGHT, WIDTH),
        torch.tensor([[WIDTH, HEIGHT]] * 2, dtype=torch.int32),
        torch.tensor([[WIDTH, HEIGHT]] * 2, dtype=torch.int64),
    )
    names = ["images", "orig_target_sizes", "crop_sizes"]
    torch.onnx.export(
        TwoSizeInputs(), args, str(path), dynamo=False, input_names=names, output_names=["boxes"],
        opset_version=17, dynamic_axes={name: {0: "batch"} for name in names + ["boxes"]},
    )
    return path


def case_for(size_dtypes=(("int32", "int64"), ("int64", "int32")), sizes=None) -> ModelCase:
    """The case: images, then the two size inputs, each declaring the dtypes it may be fed in."""
    return ModelCase(
        name="two-sizes",
        description="contract check test",
        build_reference=TwoSizeInputs,
        build_deploy=lambda target: TwoSizeInputs(),
        inputs=(
            InputSpec("images", "image", ("float32",)),
            InputSpec("orig_target_sizes", "image_size_wh", size_dtypes[0]),
            InputSpec("crop_sizes", "image_size_wh", size_dtypes[1]),
        ),
        outputs=(OutputSpec("boxes", "raw"),),
        sizes=sizes or SizeSpace(min_side=32, max_side=128, multiple_of=32, export_height=HEIGHT, export_width=WIDTH),
        to_instances=lambda outputs, index, size: None,
        max_batch=4,
        spatial_binding="per-size",
    )


def target(*dtypes, height=HEIGHT, width=WIDTH) -> DeployTarget:
    return DeployTarget(height, width, ("float32",) + dtypes)


def test_reads_names_dtypes_and_dims_from_the_graph_like_onnx_runtime_does(onnx_path):
    metas = onnx_input_metas(onnx_path)
    assert metas["images"] == TensorMeta("images", ("float32",), ("batch", 3, HEIGHT, WIDTH))
    assert metas["orig_target_sizes"].dtypes == ("int32",)
    assert metas["crop_sizes"].dtypes == ("int64",)
    # ONNX Runtime (a real CPU session) reads the same contract.
    runner = OnnxRuntimeRunner("two-sizes/onnxrt-cpu", onnx_path)
    with runner:
        assert dict(runner.get_input_metadata()) == metas


def test_matching_feed_has_no_problems(onnx_path):
    assert check_input_contract(case_for(), target("int32", "int64"), onnx_path) == []


def test_int64_fed_to_an_int32_input_is_caught_naming_the_input(onnx_path):
    problems = check_input_contract(case_for(), target("int64", "int64"), onnx_path)
    assert [(p.input_name, p.expected, p.got) for p in problems] == [("orig_target_sizes", "int32", "int64")]
    assert "bug class 2" in problems[0].problem
    with pytest.raises(InputContractError) as caught:
        assert_input_contract("trt-fp16", case_for(), target("int64", "int64"), onnx_path)
    error = caught.value
    assert not isinstance(error, UnsupportedShapeError)
    assert error.input_name == "orig_target_sizes"
    assert "[trt-fp16] input 'orig_target_sizes'" in str(error)
    assert "expected int32, got int64" in str(error)


def test_int32_fed_to_an_int64_input_is_caught_too(onnx_path):
    problems = check_input_contract(case_for(), target("int32", "int32"), onnx_path)
    assert [(p.input_name, p.expected, p.got) for p in problems] == [("crop_sizes", "int64", "int32")]


def test_every_problem_is_reported_in_one_error(onnx_path):
    with pytest.raises(InputContractError, match="input 'orig_target_sizes'.*also input 'crop_sizes'"):
        assert_input_contract("trt-fp32", case_for(), target("int64", "int32"), onnx_path)


def test_a_size_outside_a_static_graph_is_a_shape_error_naming_the_input(onnx_path):
    problems = check_input_contract(case_for(), target("int32", "int64", height=96, width=64), onnx_path)
    assert [p.input_name for p in problems] == ["images", "images"]  # height and width
    assert all(p.shape for p in problems)
    with pytest.raises(UnsupportedShapeError, match="input 'images': dimension 2: the case feeds 96"):
        assert_input_contract("trt-fp32", case_for(), target("int32", "int64", height=96, width=64), onnx_path)


def test_graph_size_the_case_never_feeds_is_caught(onnx_path):
    case = case_for(sizes=SizeSpace(min_side=128, max_side=256, multiple_of=32))
    problems = check_input_contract(case, DeployTarget(None, None, ("float32", "int32", "int64")), onnx_path)
    assert problems and all(p.input_name == "images" and p.shape for p in problems)
    assert "takes only 64" in problems[0].problem


def test_examples_are_checked_against_an_engine_profile():
    """An engine's metadata (TensorMeta with profile ranges): batch 5 and a 320 side are refused."""
    case = case_for()
    engine = metas_for_case(case, DeployTarget(None, None, ("float32", "int32", "int64")))
    engine = {name: TensorMeta(name, meta.dtypes, (DimRange(1, 4, 1, "batch (engine profile)"),) + meta.shape[1:])
              for name, meta in engine.items()}
    wanted = metas_for_case(case, DeployTarget(None, None, ("float32", "int32", "int64")))
    assert compare_metas(wanted, engine, "engine", examples=[(64, 96, 4)]) == []
    problems = compare_metas(wanted, engine, "engine", examples=[(64, 96, 5), (320, 96, 1)])
    assert [p.input_name for p in problems] == ["images", "orig_target_sizes", "crop_sizes", "images"]
    assert "dimension 0 = 5 outside [1, 4]" in problems[0].problem
    assert "dimension 2 = 320 outside [32, 128]" in problems[3].problem


def test_rank_missing_and_extra_inputs():
    case = case_for()
    wanted = metas_for_case(case, target("int32", "int64"))
    declared = {
        "images": wanted["images"],
        "orig_target_sizes": TensorMeta("orig_target_sizes", ("int32",), (2,)),  # rank 1
        "scale": TensorMeta("scale", ("float32",), (1,)),
    }
    problems = {(p.input_name, p.problem.split(":")[0]) for p in compare_metas(wanted, declared, "engine")}
    assert problems == {
        ("orig_target_sizes", "wrong rank"),
        ("crop_sizes", "input missing from the engine"),
        ("scale", "the engine has an input the case does not feed"),
    }


def test_a_missing_graph_file_is_an_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="ONNX file not found"):
        onnx_input_metas(tmp_path / "absent.onnx")
