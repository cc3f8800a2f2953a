"""TensorRT runner: a thin adapter over Polygraphy's TensorRT backend.

Loader split, as in Polygraphy: getting the serialized engine is a callable (an
"engine source") run on activate. `built_engine_source` builds from ONNX with the
loader chain of deploy_parity/backends/tensorrt/build.py (NetworkFromOnnxPath -> CreateConfig(profiles,
flags, timing cache) -> EngineBytesFromNetwork, the byte-returning half of
EngineFromNetwork, so the bytes can go to the engine cache; on TensorRT 11 fp16 is an
fp16 graph, not a builder flag); `user_engine_source` loads a user's .engine after its
sidecar says it was built here. Either way the engine is deserialized with
EngineFromBytes and run by Polygraphy's TrtRunner.

The contract is read back from the engine, not assumed (`adopt_engine`, before
TrtRunner allocates anything): binding dtypes and, for dynamic dims, the active
profile's min/max (as DimRange). So the base class refuses an int64 feed for an int32
binding (bug class 2) and any shape outside the profile with UnsupportedShapeError
(bug classes 3 and 5); and on activate the case's own feed contract is checked against
it before the first inference. The readback reads only the engine's own methods
(get_tensor_mode(...).name and so on), so it is tested on an engine-shaped object.

TensorRT and Polygraphy are imported on activate only (importlib): importing this
module needs neither.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from deploy_parity.contracts.bounds import ShapeBounds
from deploy_parity.contracts.artifact import compare_metas, raise_for
from deploy_parity.contracts import TensorMeta
from deploy_parity.errors import ArtifactError, BackendUnavailable, HarnessError
from deploy_parity.backends.capabilities import POLYGRAPHY_MISSING, TENSORRT_MISSING
from deploy_parity.backends.runner import Runner
from deploy_parity.backends.tensorrt.build import BuildRecipe, engine_bytes_loader, graph_to_build, installed_recipe
from deploy_parity.backends.tensorrt.engine_cache import EngineCache, EngineEnv, detect_env, load_user_engine, make_key
from deploy_parity.backends.tensorrt.profiles import EngineProfile, bounds_from_engine_metas, engine_tensor_meta, numpy_dtype_for_trt



def polygraphy_trt():
    """polygraphy.backend.trt, after checking TensorRT and Polygraphy can be found.

    Also puts the CUDA runtime of CUDA 13's wheels (nvidia/cu13/lib) where Polygraphy's
    CUDA wrapper looks for it (deploy_parity/backends/tensorrt/libs.py).
    """
    if importlib.util.find_spec("tensorrt") is None:
        raise BackendUnavailable(TENSORRT_MISSING)
    if importlib.util.find_spec("polygraphy") is None:
        raise BackendUnavailable(POLYGRAPHY_MISSING)
    from deploy_parity.backends.tensorrt.libs import expose_cuda_runtime

    expose_cuda_runtime()
    try:
        return importlib.import_module("polygraphy.backend.trt")
    except Exception as exc:  # a broken install should be loud, not skipped
        raise BackendUnavailable(f"Polygraphy's TensorRT backend fails to import: {exc}") from exc


def current_env() -> EngineEnv:
    polygraphy_trt()
    try:
        return detect_env()
    except Exception as exc:
        raise BackendUnavailable(f"cannot read the TensorRT version / GPU name: {exc}") from exc


def build_engine_bytes(onnx_path, recipe: BuildRecipe, profiles: Sequence[EngineProfile], timing_cache=None,
                       calibration=None, graph_data: Optional[bytes] = None) -> bytes:
    """Build a serialized engine from an .onnx file (or its converted bytes) with Polygraphy's loaders."""
    build = engine_bytes_loader(onnx_path, recipe, profiles, timing_cache, trt_api=polygraphy_trt(),
                                calibration=calibration, graph_data=graph_data)
    try:
        serialized = build()
    except Exception as exc:  # Polygraphy raises PolygraphyException with TensorRT's log above it
        raise ArtifactError(onnx_path, f"TensorRT could not build a {recipe.describe()} engine: {exc}".splitlines()[0]
                            ) from exc
    return bytes(memoryview(serialized))


def engine_build_plan(onnx_path, recipe: BuildRecipe, profiles: Sequence[EngineProfile], env: EngineEnv,
                      int8=None) -> tuple:
    """(engine key, BuiltGraph): the key hashes the graph TensorRT will actually parse. Pure
    apart from reading (and, for fp16 on TensorRT 11, converting) the graph: no TensorRT."""
    graph = graph_to_build(onnx_path, recipe, int8[0] if int8 else None)
    return make_key(graph.sha256, recipe.precision, recipe.key_flags(), profiles, env), graph


def built_engine_source(onnx_path, precision: str, profiles: Sequence[EngineProfile], cache: EngineCache,
                        int8=None) -> Callable[[], bytes]:
    """Engine bytes from the cache, built (and cached) on a miss or a stale entry.

    int8: for precision "int8", (qdq_graph, calibration) where qdq_graph() is the QDQ graph
    TensorRT 11 builds from and calibration = (feeds, cache path) what TensorRT 10 calibrates
    the fp32 graph `onnx_path` with; the graph actually built is what the engine key hashes."""

    def load() -> bytes:
        env = current_env()
        recipe = installed_recipe(precision)
        key, graph = engine_build_plan(onnx_path, recipe, profiles, env, int8)
        calibration = int8[1] if recipe.calibrate else None
        return cache.get_or_build(
            key, lambda: build_engine_bytes(graph.path, recipe, profiles, cache.timing_cache_path(env), calibration,
                                            graph.data)
        )

    return load


def user_engine_source(engine_path, precision: str) -> Callable[[], bytes]:
    """A user's .engine: refused unless its sidecar matches this TensorRT, GPU and precision."""
    return lambda: load_user_engine(Path(engine_path), current_env(), precision)


def _mode(value) -> str:
    """A TensorIOMode's name ("INPUT", "OUTPUT", "NONE") without importing TensorRT."""
    return str(getattr(value, "name", value)).rsplit(".", 1)[-1].upper()


def engine_io_names(engine, mode: str) -> list:
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    return [name for name in names if _mode(engine.get_tensor_mode(name)) == mode]


def read_engine_input_metas(engine, profile_index: int = 0,
                            case_metas: Optional[Mapping[str, TensorMeta]] = None) -> dict:
    """Binding dtypes and (profile) shapes of an ICudaEngine's inputs, as TensorMeta."""
    metas = {}
    for name in engine_io_names(engine, "INPUT"):
        if engine.is_shape_inference_io(name):
            raise HarnessError(f"engine input '{name}' is a shape tensor; the harness feeds only data tensors")
        dtype = numpy_dtype_for_trt(engine.get_tensor_dtype(name).name, name)
        shape = tuple(engine.get_tensor_shape(name))
        lo = hi = None
        if any(d < 0 for d in shape):
            lo, _opt, hi = (tuple(s) for s in engine.get_tensor_profile_shape(name, profile_index))
        metas[name] = engine_tensor_meta(name, dtype, shape, lo, hi, (case_metas or {}).get(name),
                                         source=f"engine profile {profile_index}")
    return metas


class TensorRTRunner(Runner):
    """Runs a TensorRT engine through Polygraphy's TrtRunner.

    `engine_source()` returns the serialized engine (see built_engine_source /
    user_engine_source). `case_metas` is the contract the model case feeds
    (metas_for_case): checked against the engine on activate, and the source of the
    labels / multiple_of of the engine's dynamic dims.
    """

    def __init__(
        self,
        name: str,
        engine_source: Callable[[], bytes],
        output_names: Optional[Sequence[str]] = None,
        case_metas: Optional[Mapping[str, TensorMeta]] = None,
        backend: str = "trt-fp32",
        precision: str = "fp32",
        profile_index: int = 0,
    ):
        super().__init__(name, backend, precision, output_names)
        self._engine_source = engine_source
        self.case_metas = dict(case_metas or {})
        self.profile_index = profile_index
        self.engine = None
        self._trt_runner = None
        self._metas = None

    def adopt_engine(self, engine) -> None:
        """Read the engine's contract back and check the case's feed and outputs against it (raises on a mismatch)."""
        metas = read_engine_input_metas(engine, self.profile_index, self.case_metas)
        if self.case_metas:
            raise_for(self.name, compare_metas(self.case_metas, metas, f"engine ({self.backend})"))
        self.adopt_output_names(engine_io_names(engine, "OUTPUT"), self.name, "engine")
        self.engine, self._metas = engine, metas

    def activate_impl(self):
        api = polygraphy_trt()
        serialized = self._engine_source()
        try:
            engine = api.EngineFromBytes(serialized)()
        except Exception as exc:
            raise ArtifactError(self.name, f"TensorRT cannot deserialize the engine: {exc}".splitlines()[0]) from exc
        try:
            self.adopt_engine(engine)  # before TrtRunner allocates buffers for it
            self._trt_runner = api.TrtRunner(engine, name=self.name, optimization_profile=self.profile_index)
            self._trt_runner.activate()
        except BaseException:
            self.deactivate_impl()
            raise

    def get_input_metadata_impl(self):
        return self._metas

    def infer_impl(self, feed):
        contiguous = {name: np.ascontiguousarray(array) for name, array in feed.items()}
        outputs = self._trt_runner.infer(contiguous)
        # TrtRunner returns views of host buffers it reuses on the next call: copy, or a
        # second inference (determinism, batch-vs-single) would overwrite the first.
        return {name: np.array(outputs[name], copy=True) for name in self.output_names}

    def deactivate_impl(self):
        if self._trt_runner is not None and self._trt_runner.is_active:
            self._trt_runner.deactivate()
        self._trt_runner = None
        self.engine = None
        self._metas = None

    def shape_bounds(self, case) -> ShapeBounds:
        """What strategies may draw for this engine: the case's bounds narrowed to the profile."""
        return bounds_from_engine_metas(case, self.get_input_metadata(), source=f"{self.name} engine profile")
