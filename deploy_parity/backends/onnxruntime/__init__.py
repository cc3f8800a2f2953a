"""ONNX Runtime backends: the exported graph (or the user's .onnx) on one provider set-up each.

The table below states each backend's precision once; the runner takes it from there.
  onnxrt-cpu   fp32  CPUExecutionProvider
  onnxrt-cuda  fp32  CUDAExecutionProvider with use_tf32=0
  onnxrt-trt   tf32  TensorrtExecutionProvider: TensorRT's default builder config has
                     TF32 on and ONNX Runtime exposes no switch for it. What TensorRT
                     does not take runs on CUDA: the first run is profiled, a session where
                     TensorRT ran none of the graph is refused, and each record says how
                     much it ran (placement.py)
  onnxrt-cpu-int8  int8  CPUExecutionProvider on the INT8 graph: the user's int8_onnx_path,
                     or the fp32 export quantized statically (deploy_parity/export/quantize.py);
                     judged by task agreement (deploy_parity/compare/agreement.py)
"""

from __future__ import annotations

from deploy_parity.backends.backend import Backend, RunnerContext, onnx_for, register_backend, runner_name
from deploy_parity.backends.capabilities import onnxruntime_missing, requires
from deploy_parity.case import DeployTarget, ModelCase
from deploy_parity.contracts import metas_for_case


def _cpu_providers(case, target, context, onnx_path):
    return ["CPUExecutionProvider"]


def _cuda_providers(case, target, context, onnx_path):
    from deploy_parity.backends.onnxruntime.providers import CUDA_PROVIDER

    return [CUDA_PROVIDER]


def _trt_providers(case, target, context: RunnerContext, onnx_path):
    from deploy_parity.backends.onnxruntime.providers import CUDA_PROVIDER
    from deploy_parity.backends.tensorrt.profiles import derive_profile
    from deploy_parity.contracts.artifact import checked_graph_inputs

    graph = checked_graph_inputs("onnxrt-trt", case, target, onnx_path)
    cache = context.cache_dir / "engines" / "onnxrt-trt"
    cache.mkdir(parents=True, exist_ok=True)
    options = {
        "device_id": "0",
        "trt_fp16_enable": "False",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
        **derive_profile(case, target, graph_metas=graph).ort_trt_options(),
    }
    return [("TensorrtExecutionProvider", options), CUDA_PROVIDER]


def _int8_graph(case, target, context):
    from deploy_parity.export.quantize import quantized_graph

    return quantized_graph(case, target, context)


#        name           precision  providers        unavailable                       description
TABLE = (("onnxrt-cpu", "fp32", _cpu_providers, onnxruntime_missing,
          "the exported graph on ONNX Runtime's CPU provider"),
         ("onnxrt-cpu-int8", "int8", _cpu_providers, onnxruntime_missing,
          "the INT8 graph (yours, or the export quantized here) on ONNX Runtime's CPU provider"),
         ("onnxrt-cuda", "fp32", _cuda_providers, requires("cuda", "ort-cuda"),
          "the exported graph on ONNX Runtime's CUDAExecutionProvider (TF32 off)"),
         ("onnxrt-trt", "tf32", _trt_providers, requires("cuda", "ort-trt", "tensorrt"),
          "the exported graph on ONNX Runtime's TensorrtExecutionProvider"))


def _factory(name: str, precision: str, providers):
    def factory(case: ModelCase, target: DeployTarget, context: RunnerContext):
        from deploy_parity.backends.onnxruntime.runner import OnnxRuntimeRunner

        onnx_path = _int8_graph(case, target, context) if precision == "int8" else onnx_for(case, target, context)
        return OnnxRuntimeRunner(runner_name(case, name, target), onnx_path,
                                 providers=providers(case, target, context, onnx_path),
                                 output_names=case.output_names, dim_bounds=metas_for_case(case, target),
                                 backend=name, precision=precision)

    return factory


for _name, _precision, _providers, _unavailable, _description in TABLE:
    register_backend(Backend(_name, _precision, _description, _factory(_name, _precision, _providers), _unavailable,
                             gpu=not _name.startswith("onnxrt-cpu")))
