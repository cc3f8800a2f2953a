"""The TensorRT path with the real Polygraphy, up to where TensorRT itself is needed.

Runs with `pip install -e .` alone (Polygraphy is a core dependency; TensorRT is not
needed):

- the recipe per precision and TensorRT major (a builder flag on 10, an fp16 graph on 11);
- Polygraphy's loader chain as the runner builds it (EngineBytesFromNetwork over
  NetworkFromOnnxPath / NetworkFromOnnxBytes with CreateConfig), for every precision,
  with Profile objects filled from the harness's profiles;
- Polygraphy's real CreateConfig called against a stand-in `tensorrt` module (flag enums
  of TensorRT 10 and 11, a builder/config/network recording what is set), injected into
  sys.modules for that test only: CreateConfig(fp16=True) fails on 11, the recipe does not;
- TensorRT 11's fp16 graph (deploy_parity/backends/tensorrt/fp16_graph.py), as the chain's
  NetworkFromOnnxBytes gets it, run on ONNX Runtime's CPU provider: float32 inputs and
  outputs, float16 inside, Resize's scales and shape arithmetic in float32, within the
  fp16 row;
- the engine readback and the activate-time contract check on an engine-shaped object.
"""

from __future__ import annotations

import enum
import importlib.util
import sys
import types

import numpy as np
import onnx
import pytest
import torch

from deploy_parity.case import DeployTarget, InputSpec, ModelCase, OutputSpec, SizeSpace
from deploy_parity.compare.tensors import compare_tensors
from deploy_parity.compare.tolerances import lookup
from deploy_parity.compare.verdict import Verdict
from deploy_parity.contracts import DimRange, metas_for_case
from deploy_parity.errors import ArtifactError, BackendUnavailable, HarnessError, InputContractError
from deploy_parity.backends.tensorrt.runner import TensorRTRunner, read_engine_input_metas
from deploy_parity.backends.tensorrt.build import BUILDER_FLAGS, BuildRecipe, engine_bytes_loader, polygraphy_profiles, recipe_for
from deploy_parity.backends.tensorrt.profiles import derive_profile
from models.pose_rtmo import CASE as POSE
from tests.tiny_cases import export_user_graph

polygraphy_trt = pytest.importorskip("polygraphy.backend.trt")  # a core dependency: never skipped after pip install -e .
from polygraphy.exception import PolygraphyException  # noqa: E402

PRECISIONS = ("fp32", "tf32", "fp16")
MAJORS = (10, 11)


# ----------------------------------------------------------------------- a small graph


class Detector(torch.nn.Module):
    """What trips fp16 converters: Resize with constant scales, Cast(to=FLOAT) of ints, a float arange."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 4, 3, stride=2, padding=1))

    def forward(self, images, orig_target_sizes):
        features = torch.nn.functional.interpolate(self.body(images), scale_factor=2.0, mode="nearest")
        ramp = torch.arange(features.shape[-1], dtype=torch.float32, device=images.device) / features.shape[-1]
        pooled = (features * ramp).mean(dim=(2, 3))
        return pooled * orig_target_sizes.float().sum(dim=1, keepdim=True) / 100.0


def detector_case(**changes) -> ModelCase:
    fields = dict(
        name="tiny-detector", description="Polygraphy chain tests", build_reference=Detector,
        build_deploy=lambda target: Detector(),
        inputs=(InputSpec("images", "image", ("float32",)), InputSpec("orig_target_sizes", "image_size_wh", ("int32",))),
        outputs=(OutputSpec("scores", "raw"),),
        sizes=SizeSpace(min_side=30, max_side=200, multiple_of=16, max_aspect=3.0, export_height=64, export_width=96),
        to_instances=lambda outputs, index, size: None, max_batch=3, spatial_binding="dynamic",
    )
    fields.update(changes)
    return ModelCase(**fields)


DYNAMIC = DeployTarget(None, None, ("float32", "int32"))


@pytest.fixture(scope="module")
def detector_onnx(tmp_path_factory):
    args = (torch.rand(1, 3, 64, 96), torch.tensor([[96, 64]], dtype=torch.int32))
    return export_user_graph(Detector(), tmp_path_factory.mktemp("polygraphy") / "detector.onnx", args,
                             ["images", "orig_target_sizes"], ["scores"],
                             {"images": {0: "batch", 2: "height", 3: "width"}, "orig_target_sizes": {0: "batch"},
                              "scores": {0: "batch"}})


PROFILES = {
    "dynamic": [derive_profile(detector_case(), DYNAMIC)],
    "per-size": [derive_profile(POSE, POSE.deploy_target(192, 256, ("float32",)))],
}


# ------------------------------------------------------------------------------ recipe


def test_on_tensorrt_10_precision_is_the_builder_flags_the_cache_always_keyed():
    for precision in PRECISIONS:
        recipe = recipe_for(precision, 10)
        assert recipe.config_kwargs() == BUILDER_FLAGS[precision]
        assert recipe.key_flags() == BUILDER_FLAGS[precision]  # engine cache entries from before stay valid
        assert not recipe.fp16_graph and recipe.strongly_typed is None


def test_on_tensorrt_11_fp16_is_an_fp16_graph_in_a_strongly_typed_network():
    fp16 = recipe_for("fp16", 11)
    assert "fp16" not in fp16.config_kwargs()  # BuilderFlag.FP16 is gone
    assert fp16.fp16_graph and fp16.strongly_typed is True
    assert fp16.key_flags() == {"tf32": False, "fp16_graph": True, "strongly_typed": True}
    assert recipe_for("fp32", 11).config_kwargs() == {"tf32": False}
    assert recipe_for("tf32", 11).config_kwargs() == {"tf32": True}
    assert recipe_for("fp16", 11).key_flags() != recipe_for("fp16", 10).key_flags()
    # A TensorRT 11 whose enum no longer has STRONGLY_TYPED types every network: leave it to the default.
    assert recipe_for("fp16", 11, network_flags=[]).strongly_typed is None


def test_tensorrt_without_a_tf32_flag_refuses_trt_tf32_and_unknown_precisions_are_refused():
    with pytest.raises(BackendUnavailable, match="no TF32 builder flag"):
        recipe_for("tf32", 11, builder_flags=["FP8"])
    with pytest.raises(HarnessError, match="no TensorRT recipe for precision 'int4'"):
        recipe_for("int4", 10)


# ----------------------------------------------------------- the loader chain (no TensorRT)


@pytest.mark.parametrize("profile_name", sorted(PROFILES))
@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_runner_builds_polygraphys_loader_chain_for_every_precision_and_profile(
        precision, major, profile_name, detector_onnx, tmp_path):
    recipe = recipe_for(precision, major)
    profiles = PROFILES[profile_name]
    timing = tmp_path / "timing.cache"
    loader = engine_bytes_loader(detector_onnx, recipe, profiles, timing)

    assert isinstance(loader, polygraphy_trt.EngineBytesFromNetwork)
    assert loader.timing_cache_path == str(timing)
    config = loader._config
    assert isinstance(config, polygraphy_trt.CreateConfig)
    assert (config.fp16, config.tf32) == (precision == "fp16" and major == 10, precision == "tf32")
    assert config.timing_cache_path == str(timing)
    network = loader._network
    if major == 10 or precision != "fp16":
        assert isinstance(network, polygraphy_trt.NetworkFromOnnxPath) and network.path == str(detector_onnx)
    else:
        assert isinstance(network, polygraphy_trt.NetworkFromOnnxBytes)
    assert network.strongly_typed is (major >= 11)
    # The profiles CreateConfig adds are the harness's, input by input.
    assert len(config.profiles) == len(profiles)
    for poly, ours in zip(config.profiles, profiles):
        assert list(poly.keys()) == ours.names()
        for name, shape_range in ours.inputs:
            assert (tuple(poly[name].min), tuple(poly[name].opt), tuple(poly[name].max)) == (
                shape_range.min, shape_range.opt, shape_range.max)


def test_polygraphy_profiles_keep_every_input_and_shape():
    profile = PROFILES["dynamic"][0]
    (poly,) = polygraphy_profiles([profile])
    assert isinstance(poly, polygraphy_trt.Profile)
    assert repr(poly) == ("Profile().add('images', min=(1, 3, 32, 32), opt=(1, 3, 64, 96), max=(3, 3, 192, 192))"
                          ".add('orig_target_sizes', min=(1, 2), opt=(1, 2), max=(3, 2))")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_building_the_chain_imports_no_tensorrt(detector_onnx):
    engine_bytes_loader(detector_onnx, recipe_for("fp16", 11), PROFILES["dynamic"])
    engine_bytes_loader(detector_onnx, recipe_for("fp16", 10), PROFILES["dynamic"])
    assert "tensorrt" not in sys.modules


def test_int8_on_tensorrt_10_is_calibrated_and_on_11_built_from_the_qdq_graph():
    ten, eleven = recipe_for("int8", 10), recipe_for("int8", 11)
    assert ten.config_kwargs() == {"fp16": False, "tf32": False, "int8": True} and ten.calibrate and not ten.qdq_graph
    assert eleven.qdq_graph and eleven.strongly_typed and not eleven.calibrate
    assert "int8" not in eleven.config_kwargs()  # strongly typed: the graph's Q/DQ nodes say where INT8 runs
    assert ten.key_flags()["calibrated"] and eleven.key_flags()["qdq_graph"]
    assert "calibrated on the case's feeds" in ten.describe() and "QDQ INT8 graph" in eleven.describe()


def test_the_int8_chain_calibrates_with_polygraphys_calibrator_on_the_cases_feeds(detector_onnx, tmp_path,
                                                                                  stand_in_tensorrt):
    """The TensorRT 10 chain on CPU: the config made when TensorRT asks for it holds a real
    Polygraphy Calibrator fed the case's calibration feeds and writing the keyed cache."""
    from deploy_parity.backends.tensorrt.build import CalibratedConfig

    feeds = [DETECTOR_FEED, DETECTOR_FEED]
    cache = tmp_path / "detector.calibration"
    loader = engine_bytes_loader(detector_onnx, recipe_for("int8", 10), PROFILES["dynamic"], tmp_path / "timing",
                                 calibration=(lambda: feeds, cache))
    config = loader._config
    assert isinstance(config, CalibratedConfig) and config.kwargs["int8"] is True and config.cache_path == str(cache)
    assert [list(p.keys()) for p in config.kwargs["profiles"]] == [["images", "orig_target_sizes"]]
    assert isinstance(loader._network, polygraphy_trt.NetworkFromOnnxPath) and loader._network.path == str(detector_onnx)
    assert "tensorrt" not in sys.modules  # nothing of TensorRT until the config is made
    fake = stand_in_tensorrt(10)  # the calibrator subclasses TensorRT's; a stand-in base class on CPU
    fake.IInt8EntropyCalibrator2, fake.IInt8LegacyCalibrator, fake.IInt8Calibrator = (type(n, (), {}) for n in (
        "IInt8EntropyCalibrator2", "IInt8LegacyCalibrator", "IInt8Calibrator"))
    calibrator = config.calibrator()
    assert isinstance(calibrator, fake.IInt8EntropyCalibrator2)
    assert calibrator.data_loader == feeds and calibrator._cache == str(cache)
    with pytest.raises(HarnessError, match="needs calibration feeds"):
        engine_bytes_loader(detector_onnx, recipe_for("int8", 10), PROFILES["dynamic"])


def test_tensorrt_11s_int8_chain_builds_the_qdq_graph_strongly_typed(detector_onnx, tmp_path):
    from deploy_parity.export.quantize import quantize_graph, sort_topologically

    qdq = tmp_path / "detector-int8.onnx"
    quantize_graph(detector_onnx, [DETECTOR_FEED, DETECTOR_FEED], qdq)
    sort_topologically(qdq)
    loader = engine_bytes_loader(qdq, recipe_for("int8", 11), PROFILES["dynamic"])
    assert isinstance(loader._network, polygraphy_trt.NetworkFromOnnxPath) and loader._network.path == str(qdq)
    assert loader._network.strongly_typed is True and isinstance(loader._config, polygraphy_trt.CreateConfig)
    assert not getattr(loader._config, "int8", False)
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(qdq)).graph.node)
    assert "tensorrt" not in sys.modules


def run_cpu(model_or_path, feed):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # ONNX Runtime 1.32's NCHWc layout pass (ORT_ENABLE_ALL) crashes on some float16 graphs
    # (detr-tiny's); TensorRT does not run it. Extended keeps every other optimisation.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    source = model_or_path if isinstance(model_or_path, bytes) else str(model_or_path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"]).run(None, feed)


DETECTOR_FEED = {"images": np.random.default_rng(0).random((2, 3, 80, 112), dtype=np.float32),
                 "orig_target_sizes": np.array([[112, 80], [112, 80]], np.int32)}


def test_tensorrt_11s_fp16_graph_keeps_float32_io_and_runs_within_the_fp16_row(detector_onnx):
    """The ONNX half of the TensorRT 11 fp16 chain, run: the bytes NetworkFromOnnxBytes would parse, on ORT's CPU."""
    loader = engine_bytes_loader(detector_onnx, recipe_for("fp16", 11), PROFILES["dynamic"])
    converted = loader._network._model_bytes()  # the callable Polygraphy invokes when it builds the network
    model = onnx.load_from_string(converted)
    io_types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)}
    assert io_types == {"images": onnx.TensorProto.FLOAT, "orig_target_sizes": onnx.TensorProto.INT32,
                        "scores": onnx.TensorProto.FLOAT}  # the engine binds what the case feeds
    weights = {t.data_type for t in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in weights
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    resize = next(node for node in model.graph.node if node.op_type == "Resize")
    assert types[resize.input[0]] == onnx.TensorProto.FLOAT16  # the upsampled features: float16
    scales = resize.input[2]
    assert types.get(scales, next((t.data_type for t in model.graph.initializer if t.name == scales), None)) \
        == onnx.TensorProto.FLOAT  # tensor(float) only, in ONNX
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    assert convs and all(types[node.output[0]] == onnx.TensorProto.FLOAT16 for node in convs)

    fp32 = run_cpu(detector_onnx, DETECTOR_FEED)[0]
    fp16 = run_cpu(converted, DETECTOR_FEED)[0]
    assert fp16.dtype == np.float32 and not np.array_equal(fp16, fp32)  # it really ran in half
    comparison = compare_tensors(fp32, fp16, lookup("tensor", "trt-fp16", "fp16"), "scores")
    assert comparison.verdict == Verdict.PASS, comparison.message


# ------------------------------------------- CreateConfig against a stand-in tensorrt module


def fake_tensorrt(major: int) -> types.ModuleType:
    """Only what CreateConfig and Profile.to_trt touch: flag enums of the major, a recording builder."""
    module = types.ModuleType("tensorrt")
    module.__version__ = {10: "10.16.1.11", 11: "11.4.0.106"}[major]
    flags = ["TF32", "BF16", "INT8", "FP8", "REFIT", "SPARSE_WEIGHTS", "DIRECT_IO", "STRIP_PLAN"]
    if major < 11:
        flags += ["FP16", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"]
    module.BuilderFlag = enum.Enum("BuilderFlag", flags)
    module.NetworkDefinitionCreationFlag = enum.Enum("NetworkDefinitionCreationFlag", ["STRONGLY_TYPED"])
    module.ProfilingVerbosity = enum.Enum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "DETAILED", "NONE"])
    module.LayerType = enum.Enum("LayerType", ["SHAPE", "CONVOLUTION"])
    return module


class RecordingConfig:
    def __init__(self):
        self.flags, self.cleared, self.profiles, self.timing_cache = set(), set(), [], None
        self.profiling_verbosity = None

    def set_flag(self, flag):
        self.flags.add(flag.name)

    def clear_flag(self, flag):
        self.flags.discard(flag.name)
        self.cleared.add(flag.name)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)

    def create_timing_cache(self, data):
        return ("timing cache", bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing_cache = cache


class RecordingProfile(dict):
    def set_shape(self, name, min, opt, max):
        self[name] = (tuple(min), tuple(opt), tuple(max))


class Builder:
    def create_builder_config(self):
        return RecordingConfig()

    def create_optimization_profile(self):
        return RecordingProfile()


class Network:
    """The two inputs of the detector graph, dynamic where the ONNX graph is."""

    def __init__(self):
        self.inputs = [types.SimpleNamespace(name="images", shape=(-1, 3, -1, -1), dtype="FLOAT", is_shape_tensor=False),
                       types.SimpleNamespace(name="orig_target_sizes", shape=(-1, 2), dtype="INT32",
                                             is_shape_tensor=False)]
        self.num_inputs = len(self.inputs)

    def get_input(self, index):
        return self.inputs[index]

    def __iter__(self):
        return iter(())  # no layers with a precision set


@pytest.fixture
def stand_in_tensorrt(monkeypatch):
    """Install a fake `tensorrt` for one test; Polygraphy's lazy imports see it, and forget it afterwards."""
    lazy = []
    for name, module in list(sys.modules.items()):
        if name.startswith("polygraphy"):
            lazy += [value for value in vars(module).values() if type(value).__name__ == "LazyModule"]
    saved = [(value, vars(value).get("module")) for value in lazy]
    real = sys.modules.get("tensorrt")
    for value, bound in saved:  # a real TensorRT already bound (GPU runner): unbind it for this test
        if real is not None and bound is real:
            vars(value)["module"] = None

    def install(major):
        module = fake_tensorrt(major)
        monkeypatch.setitem(sys.modules, "tensorrt", module)
        return module

    yield install
    for value in lazy:
        vars(value)["module"] = None
    for value, bound in saved:
        vars(value)["module"] = bound


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_polygraphys_create_config_sets_the_recipes_flags_and_the_harness_profile(
        precision, major, stand_in_tensorrt, tmp_path):
    stand_in_tensorrt(major)
    recipe = recipe_for(precision, major)
    timing = tmp_path / "timing.cache"
    timing.write_bytes(b"previous timings")
    create = polygraphy_trt.CreateConfig(profiles=polygraphy_profiles(PROFILES["dynamic"]), load_timing_cache=str(timing),
                                         **recipe.config_kwargs())
    config = create(Builder(), Network())
    expected = {"fp32": set(), "tf32": {"TF32"}, "fp16": {"FP16"} if major == 10 else set()}[precision]
    assert config.flags == expected
    if precision != "tf32":
        assert "TF32" in config.cleared  # TensorRT's default TF32 is switched off: fp32 is IEEE fp32
    assert config.timing_cache == ("timing cache", b"previous timings")
    assert config.profiling_verbosity is not None
    (profile,) = config.profiles
    assert profile == {"images": ((1, 3, 32, 32), (1, 3, 64, 96), (3, 3, 192, 192)),
                       "orig_target_sizes": ((1, 2), (1, 2), (3, 2))}


def test_polygraphys_fp16_flag_fails_on_tensorrt_11_which_is_why_the_recipe_converts_the_graph(stand_in_tensorrt):
    stand_in_tensorrt(11)
    create = polygraphy_trt.CreateConfig(profiles=polygraphy_profiles(PROFILES["dynamic"]), fp16=True)
    with pytest.raises(PolygraphyException, match=r"fp16 in CreateConfig is not available on TensorRT version 11\."):
        create(Builder(), Network())


# -------------------------------------------------- readback on an engine-shaped object


class Named:
    def __init__(self, name):
        self.name = name


class EngineLike:
    """What an ICudaEngine answers about its IO tensors (the readback uses nothing else)."""

    def __init__(self, tensors, shape_inputs=()):
        self.tensors = tensors  # name -> (mode, dtype, shape, profile (min, opt, max) or None)
        self.num_io_tensors = len(tensors)
        self.shape_inputs = set(shape_inputs)

    def get_tensor_name(self, index):
        return list(self.tensors)[index]

    def get_tensor_mode(self, name):
        return Named(self.tensors[name][0])

    def get_tensor_dtype(self, name):
        return Named(self.tensors[name][1])

    def get_tensor_shape(self, name):
        return self.tensors[name][2]

    def get_tensor_profile_shape(self, name, profile_index):
        assert profile_index == 0
        return self.tensors[name][3]

    def is_shape_inference_io(self, name):
        return name in self.shape_inputs


def detector_engine(sizes_dtype="INT32", outputs=("scores",)):
    tensors = {
        "images": ("INPUT", "FLOAT", (-1, 3, -1, -1), ((1, 3, 32, 32), (1, 3, 64, 96), (3, 3, 192, 192))),
        "orig_target_sizes": ("INPUT", sizes_dtype, (-1, 2), ((1, 2), (1, 2), (3, 2))),
    }
    for name in outputs:
        tensors[name] = ("OUTPUT", "FLOAT", (-1, 4), None)
    return EngineLike(tensors)


def test_engine_readback_gives_the_profiles_ranges_with_the_cases_labels_and_multiples():
    case = detector_case()
    metas = read_engine_input_metas(detector_engine(), 0, metas_for_case(case, DYNAMIC))
    assert list(metas) == ["images", "orig_target_sizes"]
    batch, channels, height, width = metas["images"].shape
    assert channels == 3 and (batch.min, batch.max) == (1, 3)
    assert height == DimRange(32, 192, 16, "height (engine profile 0)")
    assert metas["orig_target_sizes"].dtypes == ("int32",) and metas["orig_target_sizes"].shape[1] == 2


def trt_runner(case=None, dtypes=("float32", "int32"), outputs=("scores",)):
    case = case or detector_case()
    return TensorRTRunner("tiny-detector/trt-fp16/dynamic", lambda: b"", list(outputs) if outputs else None,
                          metas_for_case(case, DeployTarget(None, None, dtypes)), backend="trt-fp16", precision="fp16")


def test_activate_time_check_adopts_an_engine_that_takes_the_cases_feed():
    runner = trt_runner(outputs=None)
    engine = detector_engine()
    runner.adopt_engine(engine)
    assert runner.engine is engine and runner.output_names == ["scores"]  # read from the engine
    assert runner.get_input_metadata_impl()["images"].shape[0] == DimRange(1, 3, 1, "batch (engine profile 0)")


def test_activate_time_check_refuses_an_int32_binding_for_an_int64_feed_before_any_inference():
    case = detector_case(inputs=(InputSpec("images", "image", ("float32",)),
                                 InputSpec("orig_target_sizes", "image_size_wh", ("int64", "int32"))))
    runner = trt_runner(case, dtypes=("float32", "int64"))
    with pytest.raises(InputContractError, match="input 'orig_target_sizes'.*int32.*int64"):
        runner.adopt_engine(detector_engine())
    assert runner.engine is None


def test_activate_time_check_refuses_an_engine_missing_an_output_or_feeding_shape_tensors():
    with pytest.raises(ArtifactError, match=r"engine lacks outputs \['scores'\]"):
        trt_runner().adopt_engine(detector_engine(outputs=("boxes",)))
    engine = detector_engine()
    engine.shape_inputs = {"orig_target_sizes"}
    with pytest.raises(HarnessError, match="shape tensor"):
        trt_runner().adopt_engine(engine)


def test_recipe_is_plain_data_for_the_cache_key():
    recipe = recipe_for("fp16", 11)
    assert isinstance(recipe, BuildRecipe) and hash(recipe) == hash(recipe_for("fp16", 11))
    assert "float16" in recipe.describe() and "fp16=True" in recipe_for("fp16", 10).describe()


# ------------------------------------------- issue 22: the key hashes the graph TensorRT parses


def test_the_fp16_engine_key_follows_the_fp16_conversion_not_only_the_fp32_graph(detector_onnx, monkeypatch):
    """TensorRT 11 builds fp16 from the converted float16 graph: a change to the conversion
    (fp16_graph.py) must key a new engine, not serve the one built from the old conversion."""
    from deploy_parity.backends.tensorrt import fp16_graph
    from deploy_parity.backends.tensorrt.engine_cache import EngineEnv
    from deploy_parity.backends.tensorrt.runner import engine_build_plan

    env = EngineEnv(tensorrt="11.1.0", gpu="NVIDIA H100 80GB HBM3")
    recipe = recipe_for("fp16", 11)
    key, graph = engine_build_plan(detector_onnx, recipe, PROFILES["dynamic"], env)
    assert graph.data is not None and graph.data[:2] != b"" and key == engine_build_plan(
        detector_onnx, recipe, PROFILES["dynamic"], env)[0]
    converted = fp16_graph.fp16_graph_bytes

    def changed_conversion(path):  # the conversion now also keeps, say, one more node in float32
        import onnx

        model = onnx.load_from_string(converted(path))
        model.graph.node[0].doc_string = "kept in float32 by the new conversion"
        return model.SerializeToString()

    monkeypatch.setattr(fp16_graph, "fp16_graph_bytes", changed_conversion)
    changed, graph_after = engine_build_plan(detector_onnx, recipe, PROFILES["dynamic"], env)
    assert changed.digest() != key.digest() and graph_after.data != graph.data
    # TensorRT 10's fp16 is a builder flag on the fp32 graph: its key follows that file.
    ten = recipe_for("fp16", 10)
    assert engine_build_plan(detector_onnx, ten, PROFILES["dynamic"], env)[1].data is None

