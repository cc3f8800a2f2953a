"""GPU runners: what runs here (CPU), and GPU tests that run only where a GPU is.

CPU part: TorchRunner's precision modes run on device="cpu" (casting and contract
logic, not CUDA numerics); the TensorRT runner and factories refuse clearly where
TensorRT is absent. GPU part (@gpu, @trt): skipped here with the backend's own reason;
on the GPU runner they compare against the CPU reference with the tolerance table.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

import deploy_parity.backends.tensorrt as tensorrt_backends
from deploy_parity.backends import BACKENDS, reference_runner
from deploy_parity.case import InputSpec, ModelCase, OutputSpec, SizeSpace
from deploy_parity.compare.case_outputs import compare_case_outputs
from deploy_parity.compare.tensors import compare_tensors
from deploy_parity.compare.tolerances import lookup
from deploy_parity.compare.verdict import Verdict
from deploy_parity.contracts import DimRange, TensorMeta, metas_for_case
from deploy_parity.errors import BackendUnavailable, HarnessError, InputContractError, UnsupportedShapeError
from deploy_parity.inputs import make_feed
from deploy_parity.registry import build_registry
from deploy_parity.backends.onnxruntime.providers import TRT_PROVIDER
from deploy_parity.backends.pytorch import deploy_runner
from deploy_parity.backends.pytorch.runner import NO_CUDA, TorchRunner, ieee_fp32
from deploy_parity.backends.tensorrt.runner import TENSORRT_MISSING, TensorRTRunner
from models.pose_rtmo import CASE as POSE
from tests.tiny_cases import export_user_graph


class HalfSafeHead(torch.nn.Module):
    """Conv head that follows its input's dtype (no .float() inside): fine under .half()."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 4, 3))

    def forward(self, images):
        return self.body(images).mean(dim=(2, 3))


HEAD_METAS = {"images": TensorMeta("images", ("float32",), (DimRange(1, 4), 3, DimRange(8, 64), DimRange(8, 64)))}


def head_feed(batch=2, height=16, width=24, dtype=np.float32):
    return {"images": np.random.default_rng(0).random((batch, 3, height, width)).astype(dtype)}


def cpu_runner(precision, build=HalfSafeHead, metas=HEAD_METAS, outputs=("scores",)):
    return TorchRunner(f"head/{precision}-on-cpu", build, metas, list(outputs), precision=precision, device="cpu")


# ---------------------------------------------------------------- CPU: torch modes


class HalfOutputHead(torch.nn.Module):
    """fp32 weights, a float16 output (a head that casts its result down)."""

    def __init__(self):
        super().__init__()
        self.inner = HalfSafeHead()

    def forward(self, images):
        return self.inner(images).half()


def test_cpu_fp32_returns_what_the_module_produced_and_the_half_modes_widen_to_float32():
    """The reference and torch-cpu hand the comparators the module's own dtype (float16 here);
    the half modes (and CUDA) widen float16 exactly to float32."""
    feed = head_feed()
    with cpu_runner("fp32", build=HalfOutputHead) as fp32, cpu_runner("fp16", build=HalfOutputHead) as half, \
            cpu_runner("autocast", build=HalfOutputHead) as autocast:
        as_produced = fp32.infer(feed)["scores"]
        assert as_produced.dtype == np.float16 and fp32.first_call_seconds is not None
        for runner in (half, autocast):
            widened = runner.infer(feed)["scores"]
            assert widened.dtype == np.float32
            np.testing.assert_allclose(widened, as_produced.astype(np.float32), rtol=1e-2, atol=1e-2)


def test_half_mode_casts_module_and_inputs_inside_and_stays_within_the_fp16_row():
    feed = head_feed()
    with TorchRunner("head/torch-cpu", HalfSafeHead, HEAD_METAS, ["scores"]) as plain, cpu_runner("fp16") as half:
        assert half.precision == "fp16"
        assert next(half.module.parameters()).dtype == torch.float16
        reference, candidate = plain.infer(feed)["scores"], half.infer(feed)["scores"]
    assert candidate.dtype == np.float32  # upcast exactly for the comparators
    assert not np.array_equal(reference, candidate)  # it really ran in half
    comparison = compare_tensors(reference, candidate, lookup("tensor", "torch-cuda-fp16", "fp16"), "scores")
    assert comparison.verdict == Verdict.PASS, comparison.message


def test_half_mode_still_requires_the_declared_float32_feed():
    """The cast to fp16 is the runner's; a caller handing in fp16 is a contract error, not a shortcut."""
    with cpu_runner("fp16") as half:
        with pytest.raises(InputContractError, match="input 'images': wrong dtype; expected float32, got float16"):
            half.infer(head_feed(dtype=np.float16))


class FloatCastHead(torch.nn.Module):
    """Casts its input to fp32 before an fp16 conv: the classic non-half-safe module."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, images):
        return self.conv(images.float()).amax(dim=(2, 3))


def test_half_mode_names_a_module_that_is_not_half_safe():
    metas = {"images": TensorMeta("images", ("float32",), (1, 3, 16, 16))}
    runner = TorchRunner("cast/half-on-cpu", FloatCastHead, metas, ["scores"], precision="fp16", device="cpu")
    with runner:
        with pytest.raises(HarnessError, match="not half-safe.*torch-cuda-autocast"):
            runner.infer({"images": np.zeros((1, 3, 16, 16), dtype=np.float32)})


def test_pose_runs_under_half_within_the_fp16_row():
    """pose-rtmo casts its normalised input to the weights' dtype, so .half() runs it."""
    target = POSE.deploy_target(64, 96, ("float32",))
    feed = make_feed(POSE, 64, 96, 1, 0)
    half = TorchRunner("pose/half-on-cpu", lambda: POSE.build_deploy(target), metas_for_case(POSE, target),
                           POSE.output_names, precision="fp16", device="cpu")
    with half, reference_runner(POSE) as ref:
        candidate = half.infer(feed)
        reference = ref.infer(feed)
    comparisons = compare_case_outputs(POSE, reference, candidate, backend="torch-cuda-fp16", precision="fp16",
                                       image_size=(64, 96), batch=1)
    assert all(c.verdict != Verdict.FAIL for c in comparisons), [c.message for c in comparisons]


DEFAULT_ZOO = build_registry().select(None)


@pytest.mark.parametrize("precision", ["fp16", "autocast"])
@pytest.mark.parametrize("case", DEFAULT_ZOO, ids=[c.name for c in DEFAULT_ZOO])
def test_every_default_model_runs_in_the_torch_gpu_runners_half_modes_on_cpu(case, precision, monkeypatch):
    """Half-safety known before a GPU exists: the torch-cuda-fp16 / -autocast runner, on device "cpu".

    CPU half kernels are not CUDA's, so this says whether the model runs (no float32
    tensor meeting float16 weights, no float32-only constant) and gives finite float32
    outputs of every declared name, not how close they come; the GPU smoke run says that.
    """
    import torchvision.ops.boxes

    cpu_nms = torchvision.ops.boxes.nms

    def nms_widening_half_on_cpu(boxes, scores, iou_threshold):
        # torchvision's CPU NMS kernel has no Half version; its CUDA kernel has (it ran in
        # half on the H200, docs/gpu.md). Half -> float32 is exact, so only the CPU gap is bridged.
        if boxes.dtype == torch.float16 and boxes.device.type == "cpu":
            boxes, scores = boxes.float(), scores.float()
        return cpu_nms(boxes, scores, iou_threshold)

    monkeypatch.setattr(torchvision.ops.boxes, "nms", nms_widening_half_on_cpu)
    if case.sizes.export_height:  # a fixed-size case: its one size
        height, width = case.sizes.export_height, case.sizes.export_width
    else:  # the two smallest accepted sides: rectangular, where bug class 1 hides
        sides = [side for side in range(case.sizes.min_side, case.sizes.max_side + 1) if case.sizes.accepts(side, side)]
        height, width = sides[0], sides[1]
    dtypes = case.default_dtypes()
    target = case.deploy_target(height, width, dtypes)
    feed = make_feed(case, height, width, min(2, case.max_batch), 0, dtypes)
    with deploy_runner(case, target, f"torch-cuda-{precision}", "cpu", precision) as runner:
        outputs = runner.infer(feed)
    assert sorted(outputs) == sorted(case.output_names)
    for name, value in outputs.items():
        assert value.dtype != np.float16, f"{name} came back in float16; half outputs widen to float32"
        if np.issubdtype(value.dtype, np.floating):
            assert np.isfinite(value).all(), f"{case.name} {precision}: {name} has NaN or Inf"
    assert any(value.size for value in outputs.values()), f"{case.name} {precision}: every output is empty"


def test_ieee_fp32_switches_tf32_off_and_restores_it():
    conv = torch.backends.cudnn.conv
    before = (conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
    with ieee_fp32(torch):
        assert conv.fp32_precision == "ieee" and torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert (conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible: nothing to refuse")
def test_cuda_runner_without_a_device_refuses_with_where_to_run():
    runner = TorchRunner("head/half", HalfSafeHead, HEAD_METAS, ["scores"], precision="fp16", device="cuda")
    with pytest.raises(BackendUnavailable) as caught:
        runner.activate()
    assert NO_CUDA in str(caught.value)
    assert not runner.is_active


# ------------------------------------------------------------ CPU: TensorRT refusals


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_trt_runner_without_tensorrt_refuses_before_loading_any_engine():
    calls = []
    runner = TensorRTRunner("pose/trt-fp16", lambda: calls.append(1), ["dets"], backend="trt-fp16", precision="fp16")
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed") as caught:
        runner.activate()
    assert TENSORRT_MISSING in str(caught.value)
    assert calls == []  # the engine source (build or load) never ran


class IntSizeDetector(torch.nn.Module):
    def forward(self, images, orig_target_sizes):
        return images.mean(dim=(1, 2, 3)).unsqueeze(1) * orig_target_sizes.float()


def int_size_case(onnx_path=None) -> ModelCase:
    return ModelCase(
        name="int-size-detector",
        description="bug class 2 shape: an integer size input",
        build_reference=IntSizeDetector,
        build_deploy=lambda target: IntSizeDetector(),
        inputs=(InputSpec("images", "image", ("float32",)),
                InputSpec("orig_target_sizes", "image_size_wh", ("int64", "int32"))),
        outputs=(OutputSpec("boxes", "raw"),),
        sizes=SizeSpace(min_side=32, max_side=64, multiple_of=32, export_height=32, export_width=64),
        to_instances=lambda outputs, index, size: None,
        max_batch=2,
        spatial_binding="per-size",
        onnx_path=onnx_path,
    )


@pytest.fixture(scope="module")
def int32_graph(tmp_path_factory):
    args = (torch.rand(1, 3, 32, 64), torch.tensor([[64, 32]], dtype=torch.int32))
    return export_user_graph(IntSizeDetector(), tmp_path_factory.mktemp("int32") / "int32_sizes.onnx", args,
                             ["images", "orig_target_sizes"], ["boxes"],
                             {"images": {0: "batch"}, "orig_target_sizes": {0: "batch"}, "boxes": {0: "batch"}})


@pytest.mark.parametrize("backend", ["trt-fp16", "onnxrt-trt"])
def test_trt_factories_check_the_graph_before_any_engine_is_built(int32_graph, runner_context, backend):
    """A user graph binding int32, a case feeding int64: refused at the factory, naming the input."""
    case = int_size_case(onnx_path=int32_graph)
    target = case.deploy_target(32, 64, ("float32", "int64"))
    with pytest.raises(InputContractError, match="input 'orig_target_sizes'.*binds int32 but the case feeds int64"):
        BACKENDS[backend].factory(case, target, runner_context)
    engines = runner_context.cache_dir / "engines"
    assert not engines.exists() or not any(engines.glob("*.engine"))


def test_trt_factory_builds_nothing_until_activated(int32_graph, runner_context):
    case = int_size_case(onnx_path=int32_graph)
    runner = BACKENDS["trt-fp32"].factory(case, case.deploy_target(32, 64, ("float32", "int32")),
                                          runner_context)
    assert isinstance(runner, TensorRTRunner) and not runner.is_active
    assert runner.case_metas["orig_target_sizes"].dtypes == ("int32",)
    assert not (runner_context.cache_dir / "engines").exists()


# ------------------------------------------------------------------- GPU tests


def needs(*backend_names):
    """Marks for a test that needs these backends: gpu (+ trt), and a skip with their reason."""
    reasons = [f"{name}: {BACKENDS[name].unavailable()}" for name in backend_names if BACKENDS[name].unavailable()]
    marks = [pytest.mark.gpu, pytest.mark.skipif(bool(reasons), reason="; ".join(reasons) or "available")]
    if any(name.startswith("trt") or name == "onnxrt-trt" for name in backend_names):
        marks.append(pytest.mark.trt)
    return marks


def requires(*backend_names):
    """Decorator form of `needs`."""

    def apply(test):
        for mark in needs(*backend_names):
            test = mark(test)
        return test

    return apply


def run_against_reference(backend_name, case, height, width, batch, context):
    target = case.deploy_target(height, width, case.default_dtypes())
    feed = make_feed(case, height, width, batch, seed=7)
    with reference_runner(case) as reference:
        expected = reference.infer(feed)
    runner = BACKENDS[backend_name].factory(case, target, context)
    with runner:
        got = runner.infer(feed)
    backend = BACKENDS[backend_name]
    comparisons = compare_case_outputs(case, expected, got, backend=backend.name, precision=backend.precision,
                                       image_size=(height, width), batch=batch)
    failures = [c for c in comparisons if c.verdict == Verdict.FAIL]
    assert not failures, "\n".join(f"{c.kind} {c.output}: {c.message}" for c in failures)
    return runner


@pytest.mark.parametrize("backend_name", [
    pytest.param("torch-cuda-fp32", marks=needs("torch-cuda-fp32")),
    pytest.param("torch-cuda-autocast", marks=needs("torch-cuda-autocast")),
    pytest.param("onnxrt-cuda", marks=needs("onnxrt-cuda")),
])
def test_gpu_backend_matches_the_cpu_reference_on_the_pose_model(backend_name, runner_context):
    run_against_reference(backend_name, POSE, 128, 192, 2, runner_context)


@requires("onnxrt-trt")
def test_onnxrt_trt_says_where_tensorrt_ran_the_pose_model(runner_context):
    """TensorRT's provider leaves what TensorRT cannot take to CUDA: the run counts as
    TensorRT's only with part of the graph on TensorRT, and says how much (issue 22, item 7)."""
    runner = run_against_reference("onnxrt-trt", POSE, 128, 192, 2, runner_context)
    placement = runner.placement
    assert placement is not None and placement.partitions(TRT_PROVIDER), placement
    assert set(placement.nodes_by_provider()) <= {TRT_PROVIDER, "CUDAExecutionProvider", "CPUExecutionProvider"}
    assert runner.placement_note.startswith("TensorRT ran ") and "\n" not in runner.placement_note


@requires("torch-cuda-fp16")
def test_torch_cuda_half_matches_cpu_fp32_within_the_fp16_row():
    feed = head_feed(batch=3, height=32, width=48)
    with TorchRunner("head/torch-cpu", HalfSafeHead, HEAD_METAS, ["scores"]) as plain:
        reference = plain.infer(feed)["scores"]
    with TorchRunner("head/torch-cuda-fp16", HalfSafeHead, HEAD_METAS, ["scores"], precision="fp16", device="cuda") as half:
        candidate = half.infer(feed)["scores"]
        assert half.device_seconds > 0
    comparison = compare_tensors(reference, candidate, lookup("tensor", "torch-cuda-fp16", "fp16"), "scores")
    assert comparison.verdict == Verdict.PASS, comparison.message


@pytest.mark.parametrize("backend_name", [
    pytest.param("trt-fp32", marks=needs("trt-fp32")),
    pytest.param("trt-fp16", marks=needs("trt-fp16")),
])
def test_trt_engine_is_built_cached_and_refuses_shapes_outside_its_profile(backend_name, runner_context):
    runner = run_against_reference(backend_name, POSE, 128, 192, 2, runner_context)
    cache = tensorrt_backends.session_engine_cache(runner_context)
    assert cache.stats.builds == 1
    engines = list((runner_context.cache_dir / "engines").glob("*.engine"))
    assert len(engines) == 1 and engines[0].with_name(engines[0].name + ".json").is_file()

    target = POSE.deploy_target(128, 192, ("float32",))
    again = BACKENDS[backend_name].factory(POSE, target, runner_context)
    with again:
        assert cache.stats.hits == 1 and cache.stats.builds == 1  # loaded, not rebuilt
        batch = again.get_input_metadata()["images"].shape[0]
        assert isinstance(batch, DimRange) and (batch.min, batch.max) == (1, POSE.max_batch)
        with pytest.raises(UnsupportedShapeError, match="input 'images'.*dimension 0 = 5"):
            again.infer(make_feed(POSE, 128, 192, 5, seed=0))
        bounds = again.shape_bounds(POSE)
        assert (bounds.fixed_height, bounds.fixed_width, bounds.max_batch) == (128, 192, POSE.max_batch)
    assert runner.precision == BACKENDS[backend_name].precision


@requires("trt-fp32")
def test_trt_engine_binding_int32_refuses_an_int64_feed(int32_graph, runner_context):
    case = int_size_case(onnx_path=int32_graph)
    runner = BACKENDS["trt-fp32"].factory(case, case.deploy_target(32, 64, ("float32", "int32")),
                                          runner_context)
    with runner:
        assert runner.get_input_metadata()["orig_target_sizes"].dtypes == ("int32",)  # read from the engine
        feed = make_feed(case, 32, 64, 1, seed=0, dtypes=("float32", "int64"))
        with pytest.raises(InputContractError, match="input 'orig_target_sizes': wrong dtype; expected int32, got int64"):
            runner.infer(feed)
