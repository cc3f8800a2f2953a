"""GPU backends: PyTorch on CUDA, ONNX Runtime's CUDA and TensorRT providers, TensorRT.

Importing this module registers them (deploy_parity.backends.register_backend); it
imports no GPU library. Each backend's `unavailable()` probes what is installed and
says what is missing and how to get it; the suites skip with that text. The probe:
torch.cuda; ONNX Runtime's GPU providers by opening a one-node session with each one
that the build lists (get_available_providers() lists CUDA and TensorRT even where
their libraries cannot load; only an opened session's get_providers() tells); and
importlib.util.find_spec("tensorrt") for TensorRT itself, which is looked for here,
imported only by an opened TensorRT-provider session or an activated TensorRT runner.
Runners and engines are built only when a test needs them. Supported installs are the
pinned stacks of requirements/ (deploy_parity/gpu_stack.py, docs/gpu.md).

Precisions (the `precision` each backend's tolerance rows are looked up with):
  torch-cuda-fp32      fp32      TF32 off while it runs
  torch-cuda-fp16      fp16      module.half() and float inputs cast on the device
  torch-cuda-autocast  autocast  torch.autocast(float16)
  onnxrt-cuda          fp32      CUDAExecutionProvider with use_tf32=0
  onnxrt-trt           tf32      TensorrtExecutionProvider: TensorRT's default builder
                                 config has TF32 on and ORT exposes no switch for it
  trt-fp32/-tf32/-fp16           engines built with Polygraphy (trt_runner.py; per TensorRT major: trt/build.py)
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from typing import Optional

from deploy_parity.backends import Backend, RunnerContext, onnx_for, register_backend, runner_name
from deploy_parity.contracts import metas_for_case
# The texts live with the runners; neither module imports torch or TensorRT at import time.
from deploy_parity.runners.torch_cuda_runner import CPU_ONLY_TORCH, NO_CUDA
from deploy_parity.runners.trt_runner import POLYGRAPHY_MISSING as NO_POLYGRAPHY
from deploy_parity.runners.trt_runner import TENSORRT_MISSING as NO_TENSORRT

from deploy_parity.runners.onnxrt_runner import GPU_STACK_HINT

NO_CUDA_PROVIDER = f"onnxruntime has no CUDAExecutionProvider (the CPU build): {GPU_STACK_HINT}"
NO_TRT_PROVIDER = f"onnxruntime has no TensorrtExecutionProvider (the CPU build): {GPU_STACK_HINT}"
NO_ONNXRUNTIME = f"onnxruntime is not installed: {GPU_STACK_HINT}"
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


@dataclass(frozen=True)
class Capabilities:
    """What this machine has, as plain facts (so the reasons are testable anywhere)."""

    cuda: bool  # torch.cuda.is_available()
    torch_cuda_build: bool  # torch.version.cuda is not None
    ort_providers: Optional[tuple]  # providers an opened session really runs on; None: no onnxruntime
    tensorrt: bool  # a `tensorrt` module can be found
    polygraphy: bool
    # onnxruntime.get_available_providers() (what the build lists), and why each listed
    # GPU provider that is not in ort_providers failed to open. None: same as ort_providers.
    ort_listed: Optional[tuple] = None
    ort_failures: tuple = ()  # (provider, why) pairs


@functools.lru_cache(maxsize=1)
def probe() -> Capabilities:
    """Probe once per process (collection asks for every test item)."""
    import torch

    listed, usable, failures = None, None, []
    try:
        import onnxruntime

        listed = tuple(onnxruntime.get_available_providers())
    except ImportError:
        pass
    if listed is not None:
        from deploy_parity.runners.onnxrt_runner import open_provider

        usable = []
        for provider in listed:
            if provider in GPU_PROVIDERS:
                ok, why = open_provider(provider)
                if not ok:
                    failures.append((provider, why))
                    continue
            usable.append(provider)
        usable = tuple(usable)
    return Capabilities(
        cuda=bool(torch.cuda.is_available()),
        torch_cuda_build=torch.version.cuda is not None,
        ort_providers=usable,
        tensorrt=importlib.util.find_spec("tensorrt") is not None,
        polygraphy=importlib.util.find_spec("polygraphy") is not None,
        ort_listed=listed,
        ort_failures=tuple(failures),
    )


def missing(caps: Capabilities, needs: tuple) -> Optional[str]:
    """Everything `needs` lacks on a machine with `caps`, with how to get it; None if nothing.

    needs: "cuda", "ort-cuda", "ort-trt", "tensorrt", "polygraphy".
    """
    reasons = []
    if "cuda" in needs and not caps.cuda:
        reasons.append(NO_CUDA if caps.torch_cuda_build else f"{NO_CUDA}; {CPU_ONLY_TORCH}")
    for need, provider, text in (("ort-cuda", "CUDAExecutionProvider", NO_CUDA_PROVIDER),
                                 ("ort-trt", "TensorrtExecutionProvider", NO_TRT_PROVIDER)):
        if need in needs:
            failed = dict(caps.ort_failures)
            if caps.ort_providers is None:
                reasons.append(NO_ONNXRUNTIME)
            elif provider in failed:  # listed by the build, but a session does not open it
                reasons.append(failed[provider])
            elif provider not in caps.ort_providers:
                reasons.append(text)
    if "tensorrt" in needs and not caps.tensorrt:
        reasons.append(NO_TENSORRT)
    if "polygraphy" in needs and not caps.polygraphy:
        reasons.append(NO_POLYGRAPHY)
    # One provider message covers both ORT needs; keep each text once, in order.
    reasons = list(dict.fromkeys(reasons))
    return "; ".join(reasons) if reasons else None


def _requires(*needs) -> callable:
    return lambda: missing(probe(), needs)


# ------------------------------------------------------------------ runner factories


def _torch_cuda(mode: str, backend: str):
    def factory(case, target, context: RunnerContext):
        from deploy_parity.runners.torch_cuda_runner import TorchCudaRunner

        return TorchCudaRunner(
            runner_name(case, backend, target),
            lambda: case.build_deploy(target),
            metas_for_case(case, target),  # the feed keeps its declared dtypes in every mode
            case.output_names,
            mode=mode,
            backend=backend,
            named_outputs=case.named_outputs,
        )

    return factory


CUDA_PROVIDER = ("CUDAExecutionProvider", {"device_id": "0", "use_tf32": "0"})


def _onnxrt_cuda(case, target, context: RunnerContext):
    from deploy_parity.runners.onnxrt_runner import OnnxRuntimeRunner

    return OnnxRuntimeRunner(
        runner_name(case, "onnxrt-cuda", target),
        onnx_for(case, target, context),
        providers=[CUDA_PROVIDER],
        output_names=case.output_names,
        dim_bounds=metas_for_case(case, target),
        backend="onnxrt-cuda",
        precision="fp32",
    )


def _onnxrt_trt(case, target, context: RunnerContext):
    from deploy_parity.contracts.artifact import assert_input_contract, onnx_input_metas
    from deploy_parity.runners.onnxrt_runner import OnnxRuntimeRunner
    from deploy_parity.trt.profiles import derive_profile

    onnx_path = onnx_for(case, target, context)
    graph = onnx_input_metas(onnx_path)
    assert_input_contract("onnxrt-trt", case, target, graph)
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
    return OnnxRuntimeRunner(
        runner_name(case, "onnxrt-trt", target),
        onnx_path,
        providers=[("TensorrtExecutionProvider", options), CUDA_PROVIDER],
        output_names=case.output_names,
        dim_bounds=metas_for_case(case, target),
        backend="onnxrt-trt",
        precision="tf32",
    )


def _trt(precision: str):
    backend = f"trt-{precision}"

    def factory(case, target, context: RunnerContext):
        from deploy_parity.contracts.artifact import assert_input_contract, onnx_input_metas
        from deploy_parity.runners.trt_runner import TensorRTRunner, built_engine_source, user_engine_source
        from deploy_parity.trt.profiles import derive_profile

        case_metas = metas_for_case(case, target)
        if case.engine_path is not None:
            source = user_engine_source(case.engine_path, precision)
        else:
            onnx_path = onnx_for(case, target, context)
            graph = onnx_input_metas(onnx_path)
            # Before spending minutes on a build: does the graph take what the case feeds?
            assert_input_contract(backend, case, target, graph)
            profile = derive_profile(case, target, graph_metas=graph)
            source = built_engine_source(onnx_path, precision, [profile], engine_cache(context))
        return TensorRTRunner(
            runner_name(case, backend, target), source, case.output_names, case_metas,
            backend=backend, precision=precision,
        )

    return factory


_CACHES: dict = {}


def engine_cache(context: RunnerContext):
    """One EngineCache per cache directory, so its hit/build counts cover the session."""
    from deploy_parity.trt.engine_cache import EngineCache

    root = context.cache_dir / "engines"
    if root not in _CACHES:
        _CACHES[root] = EngineCache(root)
    return _CACHES[root]


GPU_BACKENDS = (
    Backend("torch-cuda-fp32", "fp32", "the deploy module run by PyTorch on CUDA in fp32 (TF32 off)",
            _torch_cuda("fp32", "torch-cuda-fp32"), _requires("cuda"), gpu=True, artifact="torch"),
    Backend("torch-cuda-fp16", "fp16", "the deploy module on CUDA after .half(); float inputs cast on the device",
            _torch_cuda("half", "torch-cuda-fp16"), _requires("cuda"), gpu=True, artifact="torch"),
    Backend("torch-cuda-autocast", "autocast", "the deploy module on CUDA under torch.autocast(float16)",
            _torch_cuda("autocast", "torch-cuda-autocast"), _requires("cuda"), gpu=True, artifact="torch"),
    Backend("onnxrt-cuda", "fp32", "the exported graph on ONNX Runtime's CUDAExecutionProvider (TF32 off)",
            _onnxrt_cuda, _requires("cuda", "ort-cuda"), gpu=True),
    Backend("onnxrt-trt", "tf32", "the exported graph on ONNX Runtime's TensorrtExecutionProvider",
            _onnxrt_trt, _requires("cuda", "ort-trt", "tensorrt"), gpu=True),
    Backend("trt-fp32", "fp32", "a TensorRT engine built by Polygraphy in fp32 (TF32 off)",
            _trt("fp32"), _requires("cuda", "tensorrt", "polygraphy"), gpu=True, artifact="engine"),
    Backend("trt-tf32", "tf32", "a TensorRT engine built by Polygraphy with TF32 allowed",
            _trt("tf32"), _requires("cuda", "tensorrt", "polygraphy"), gpu=True, artifact="engine"),
    Backend("trt-fp16", "fp16", "a TensorRT engine built by Polygraphy in fp16 (FP16 flag on TensorRT 10, fp16 graph on 11)",
            _trt("fp16"), _requires("cuda", "tensorrt", "polygraphy"), gpu=True, artifact="engine"),
)

for _backend in GPU_BACKENDS:
    register_backend(_backend)
