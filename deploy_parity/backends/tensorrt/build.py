"""How an engine is built for a precision on a TensorRT major: the recipe, and Polygraphy's loader chain.

TensorRT 10 (the pinned stacks): the network is weakly typed and the precision is a
builder flag. Polygraphy's CreateConfig sets BuilderFlag.FP16 for fp16=True and clears
BuilderFlag.TF32 unless tf32=True (TensorRT sets TF32 by default), so trt-fp32 is IEEE
fp32 and trt-tf32 asks for TF32 by name.

TensorRT 11 (the canary): networks are strongly typed and BuilderFlag.FP16 is gone, so
Polygraphy's CreateConfig(fp16=True) fails there (`fail_unavailable("fp16 in
CreateConfig")`: "fp16 is not available on TensorRT version 11...") and the engine's
precision is the graph's own. For fp16 the ONNX graph is converted to float16 by
deploy_parity/backends/tensorrt/fp16_graph.py (float32 inputs and outputs kept, so the engine binds
the feed the case declares; see there why not Polygraphy's ConvertToFp16, which breaks
on Resize and Cast(to=FLOAT) in this zoo's graphs) and parsed with
NetworkFromOnnxBytes. The network is marked STRONGLY_TYPED when that flag still
exists. TF32 is still a builder flag in strongly typed networks; a TensorRT without it
refuses trt-tf32 instead of building something else.

The recipe is pure data, so it is part of the engine cache key and tested without
TensorRT. `engine_bytes_loader` constructs Polygraphy's loaders (nothing runs, and
TensorRT is not imported: Polygraphy imports it lazily when a loader is called).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Optional, Sequence

from deploy_parity.errors import BackendUnavailable, HarnessError

TRT_PRECISIONS = ("fp32", "tf32", "fp16", "int8")
STRONGLY_TYPED_FROM = 11  # first TensorRT major whose networks are strongly typed, with no FP16 builder flag

# CreateConfig flags per precision on TensorRT 10 and older (also the engine cache key's flags there).
BUILDER_FLAGS = {
    "fp32": {"fp16": False, "tf32": False},
    "tf32": {"fp16": False, "tf32": True},
    "fp16": {"fp16": True, "tf32": False},
    "int8": {"fp16": False, "tf32": False, "int8": True},  # with a calibrator fed the case's calibration feeds
}


@dataclass(frozen=True)
class BuildRecipe:
    precision: str
    trt_major: int
    create_config: tuple  # sorted (keyword, value) pairs for Polygraphy's CreateConfig
    fp16_graph: bool  # convert the ONNX graph's float tensors to float16 (inputs and outputs stay float32)
    strongly_typed: Optional[bool]  # NetworkFromOnnx*(strongly_typed=...); None: TensorRT's default
    # INT8: TensorRT 10 and older calibrate the fp32 graph (INT8 flag, Polygraphy's Calibrator
    # on the case's calibration feeds); TensorRT 11's strongly typed networks take their INT8
    # from the QDQ graph the ONNX Runtime INT8 backend runs (deploy_parity/export/quantize.py).
    calibrate: bool = False
    qdq_graph: bool = False

    def config_kwargs(self) -> dict:
        return dict(self.create_config)

    def key_flags(self) -> dict:
        """What the engine cache key records: the CreateConfig flags, plus the graph and network typing when used."""
        flags = self.config_kwargs()
        if self.fp16_graph:
            flags["fp16_graph"] = True
        if self.strongly_typed is not None:
            flags["strongly_typed"] = self.strongly_typed
        if self.calibrate:
            flags["calibrated"] = True
        if self.qdq_graph:
            flags["qdq_graph"] = True
        return flags

    def describe(self) -> str:
        how = ("ONNX graph converted to float16 (IO float32), strongly typed network" if self.fp16_graph
               else "the QDQ INT8 graph, strongly typed network" if self.qdq_graph
               else ", ".join(f"{k}={v}" for k, v in self.create_config) + " builder flags"
               + (", calibrated on the case's feeds" if self.calibrate else ""))
        return f"{self.precision} on TensorRT {self.trt_major}: {how}"


def trt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError as exc:
        raise HarnessError(f"cannot read a TensorRT major from version {version!r}") from exc


def recipe_for(precision: str, major: int, builder_flags: Optional[Sequence[str]] = None,
               network_flags: Optional[Sequence[str]] = None) -> BuildRecipe:
    """The recipe for `precision` on TensorRT `major`.

    builder_flags / network_flags: the names in trt.BuilderFlag / trt.NetworkDefinitionCreationFlag
    (None: assume what the major documents). Pure.
    """
    if precision not in TRT_PRECISIONS:
        raise HarnessError(f"no TensorRT recipe for precision {precision!r}; known {list(TRT_PRECISIONS)}")
    if major < STRONGLY_TYPED_FROM:
        flags = BUILDER_FLAGS[precision]
        return BuildRecipe(precision, major, tuple(sorted(flags.items())), fp16_graph=False, strongly_typed=None,
                           calibrate=precision == "int8")
    if precision == "tf32" and builder_flags is not None and "TF32" not in builder_flags:
        raise BackendUnavailable(f"TensorRT {major} has no TF32 builder flag: trt-tf32 cannot be built there")
    strongly = True if network_flags is None or "STRONGLY_TYPED" in network_flags else None
    return BuildRecipe(precision, major, (("tf32", precision == "tf32"),), fp16_graph=precision == "fp16",
                       strongly_typed=strongly, qdq_graph=precision == "int8")


def installed_recipe(precision: str) -> BuildRecipe:
    """The recipe for the installed TensorRT (imports it: GPU path only)."""
    import tensorrt as trt

    return recipe_for(precision, trt_major(trt.__version__), list(trt.BuilderFlag.__members__),
                      list(trt.NetworkDefinitionCreationFlag.__members__))


def polygraphy_profiles(profiles, profile_class=None) -> list:
    """The harness's EngineProfiles as Polygraphy Profile objects (input order kept)."""
    if profile_class is None:
        profile_class = importlib.import_module("polygraphy.backend.trt").Profile
    converted = []
    for profile in profiles:
        poly = profile_class()
        for name, shape_range in profile.inputs:
            poly.add(name, min=shape_range.min, opt=shape_range.opt, max=shape_range.max)
        converted.append(poly)
    return converted


class CalibratedConfig:
    """CreateConfig(int8=True, calibrator=Calibrator(feeds, cache)), made when TensorRT asks
    for the config (Polygraphy's Calibrator subclasses a TensorRT class: building the chain
    must not import TensorRT)."""

    def __init__(self, trt_api, feeds, cache_path, **kwargs):
        self.trt_api = trt_api
        self.feeds = feeds  # () -> list of {input name: array}
        self.cache_path = str(cache_path)
        self.kwargs = kwargs

    def calibrator(self, base_class=None):
        return self.trt_api.Calibrator(self.feeds(), cache=self.cache_path, BaseClass=base_class)

    def __call__(self, builder, network):
        return self.trt_api.CreateConfig(calibrator=self.calibrator(), **self.kwargs)(builder, network)


@dataclass(frozen=True)
class BuiltGraph:
    """The ONNX graph TensorRT parses for a recipe, and its sha256 (what the engine key hashes)."""

    path: object  # the .onnx file parsed (fp32, or the QDQ graph), or the source of `data`
    sha256: str
    data: Optional[bytes] = None  # the converted float16 graph, when the recipe builds from one


def graph_to_build(onnx_path, recipe: BuildRecipe, qdq_graph=None) -> BuiltGraph:
    """What TensorRT will parse for `recipe`: the graph itself, the QDQ graph (`qdq_graph()`,
    TensorRT 11's INT8) or the float16 conversion of it (TensorRT 11's fp16). The key hashes
    this graph, so a change to fp16_graph.py or to the quantizer builds a new engine instead
    of serving one built from the old conversion."""
    from deploy_parity.hashing import sha256_bytes, sha256_file

    if recipe.qdq_graph:
        if qdq_graph is None:
            raise HarnessError(f"{recipe.describe()}: an INT8 build on TensorRT {recipe.trt_major} needs the QDQ graph")
        path = qdq_graph()
        return BuiltGraph(path, sha256_file(path))
    if recipe.fp16_graph:
        from deploy_parity.backends.tensorrt.fp16_graph import fp16_graph_bytes

        data = fp16_graph_bytes(onnx_path)
        return BuiltGraph(onnx_path, sha256_bytes(data), data)
    return BuiltGraph(onnx_path, sha256_file(onnx_path))


def engine_bytes_loader(onnx_path, recipe: BuildRecipe, profiles, timing_cache=None, trt_api=None, calibration=None,
                        graph_data: Optional[bytes] = None):
    """Polygraphy's EngineBytesFromNetwork(network, config=CreateConfig(...)), constructed and not called.

    The byte-returning half of EngineFromNetwork, so the engine cache can store the bytes.
    calibration: (feeds, cache path) for a calibrated INT8 recipe (TensorRT 10 and older);
    `onnx_path` is then the fp32 graph, and for TensorRT 11's INT8 the QDQ graph.
    graph_data: the float16 graph already converted (graph_to_build), so the engine is built
    from the very bytes its key hashes; None converts `onnx_path` when the network is built.
    """
    trt_api = trt_api or importlib.import_module("polygraphy.backend.trt")
    if recipe.fp16_graph:
        from deploy_parity.backends.tensorrt.fp16_graph import fp16_graph_bytes

        # A callable: Polygraphy converts when the network is built, not now.
        network = trt_api.NetworkFromOnnxBytes(graph_data if graph_data is not None else lambda: fp16_graph_bytes(onnx_path),
                                               strongly_typed=recipe.strongly_typed)
    else:
        network = trt_api.NetworkFromOnnxPath(str(onnx_path), strongly_typed=recipe.strongly_typed)
    cache = str(timing_cache) if timing_cache else None
    kwargs = dict(profiles=polygraphy_profiles(profiles, trt_api.Profile), load_timing_cache=cache,
                  **recipe.config_kwargs())
    if recipe.calibrate:
        if calibration is None:
            raise HarnessError(f"{recipe.describe()}: an INT8 build needs calibration feeds and a calibration cache")
        config = CalibratedConfig(trt_api, *calibration, **kwargs)
    else:
        config = trt_api.CreateConfig(**kwargs)
    return trt_api.EngineBytesFromNetwork(network, config=config, save_timing_cache=cache)
