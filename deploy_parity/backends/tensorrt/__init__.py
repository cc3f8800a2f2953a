"""TensorRT backends: engines built by Polygraphy from the exported graph, or the user's .engine.

runner        the Polygraphy/TensorRT adapter; imports TensorRT only when a runner activates
profiles      optimization profiles from a case, and engine shapes back into contracts
engine_cache  engines on disk, keyed by everything that makes them valid
build         the build recipe per precision and TensorRT major, and Polygraphy's loader chain
fp16_graph    the float16 ONNX graph TensorRT 11's strongly typed networks build trt-fp16 from
libs          pip-installed CUDA / TensorRT libraries made findable (Polygraphy, ONNX Runtime)
Everything but the runner's activate needs no TensorRT, so it is tested on CPU.

The table below states each backend's precision once; the build recipe and the runner
take it from there.
"""

from __future__ import annotations

from deploy_parity.backends.backend import Backend, RunnerContext, onnx_for, register_backend, runner_name
from deploy_parity.backends.capabilities import requires
from deploy_parity.case import DeployTarget, ModelCase
from deploy_parity.contracts import metas_for_case

#        name        precision  description
TABLE = (("trt-fp32", "fp32", "a TensorRT engine built by Polygraphy in fp32 (TF32 off)"),
         ("trt-tf32", "tf32", "a TensorRT engine built by Polygraphy with TF32 allowed"),
         ("trt-fp16", "fp16", "a TensorRT engine built by Polygraphy in fp16 (FP16 flag on TensorRT 10, fp16 graph on 11)"),
         ("trt-int8", "int8", "a TensorRT INT8 engine: calibrated on the case's feeds (TensorRT 10), or built from the "
                              "QDQ graph onnxrt-cpu-int8 runs (TensorRT 11)"))

_CACHES: dict = {}


def engine_cache_totals() -> dict:
    """Engines built and cache hits in this process, over every engine cache it opened
    (Polygraphy's trt-* backends; ONNX Runtime's provider keeps its own, uncounted)."""
    caches = list(_CACHES.values())
    return {"engine_builds": sum(c.stats.builds for c in caches),
            "engine_cache_hits": sum(c.stats.hits for c in caches),
            "engine_build_seconds": round(sum(c.stats.build_seconds for c in caches), 2)}


def session_engine_cache(context: RunnerContext):
    """One EngineCache per cache directory, so its hit/build counts cover the session."""
    from deploy_parity.backends.tensorrt.engine_cache import EngineCache

    root = context.cache_dir / "engines"
    if root not in _CACHES:
        _CACHES[root] = EngineCache(root)
    return _CACHES[root]


def _factory(name: str, precision: str):
    def factory(case: ModelCase, target: DeployTarget, context: RunnerContext):
        from deploy_parity.backends.tensorrt.profiles import derive_profile
        from deploy_parity.backends.tensorrt.runner import TensorRTRunner, built_engine_source, user_engine_source
        from deploy_parity.contracts.artifact import checked_graph_inputs

        if case.engine_path is not None:
            source = user_engine_source(case.engine_path, precision)
        else:
            onnx_path = onnx_for(case, target, context)
            graph = checked_graph_inputs(name, case, target, onnx_path)
            profile = derive_profile(case, target, graph_metas=graph)
            source = built_engine_source(onnx_path, precision, [profile], session_engine_cache(context),
                                         int8=_int8_inputs(case, target, context) if precision == "int8" else None)
        return TensorRTRunner(runner_name(case, name, target), source, case.output_names, metas_for_case(case, target),
                              backend=name, precision=precision)

    return factory


def _int8_inputs(case, target, context):
    """(the QDQ graph, (calibration feeds, calibration cache)), each made only when asked for."""
    from deploy_parity.export.quantize import calibration_feeds, calibration_for, int8_key, quantized_graph

    def feeds():
        return calibration_feeds(case, target, calibration_for(case, target))

    def qdq_graph():
        return quantized_graph(case, target, context)

    class CachePath:  # the calibration cache keyed like the INT8 graph: fp32 graph, feeds, method, versions
        def __fspath__(self):
            folder = context.cache_dir / "engines" / "calibration"
            folder.mkdir(parents=True, exist_ok=True)
            fp32 = onnx_for(case, target, context)
            return str(folder / f"{case.name}-{target.key()}-{int8_key(fp32, feeds(), calibration_for(case, target))}.cache")

        def __str__(self):
            return self.__fspath__()

    return qdq_graph, (feeds, CachePath())


for _name, _precision, _description in TABLE:
    register_backend(Backend(_name, _precision, _description, _factory(_name, _precision),
                             requires("cuda", "tensorrt", "polygraphy"), gpu=True, artifact="engine"))
