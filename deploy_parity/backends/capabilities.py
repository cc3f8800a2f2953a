"""What this machine can run, as plain facts, and why a backend cannot, with how to fix it.

The probe imports no GPU library it does not need: torch.cuda; ONNX Runtime's GPU
providers by opening a one-node session with each one that the build lists
(get_available_providers() lists CUDA and TensorRT even where their libraries cannot
load; only an opened session's get_providers() tells); and
importlib.util.find_spec("tensorrt") for TensorRT itself, which is imported only by an
opened TensorRT-provider session or an activated TensorRT runner. Supported installs are
the pinned stacks of requirements/ (deploy_parity/gpu_stack.py, docs/gpu.md).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from typing import Optional

from deploy_parity.errors import GPU_STACK_HINT

# What to do about each missing piece; the runners raise with the same texts.
NO_CUDA = (
    "no CUDA device visible to torch (torch.cuda.is_available() is False): run on the GPU runner, "
    "see README 'Nightly on a GPU runner'"
)
CPU_ONLY_TORCH = "this torch is a CPU-only build (torch.version.cuda is None): install a CUDA build of torch"
TENSORRT_MISSING = (
    "TensorRT is not installed: pip install -r requirements/gpu-cu13.txt (or gpu-cu12.txt), which pins it "
    "(TensorRT's libraries come from https://pypi.nvidia.com, see docs/gpu.md)"
)
POLYGRAPHY_MISSING = "Polygraphy is not installed: pip install -e . (a core dependency) or pip install polygraphy"


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
        from deploy_parity.backends.onnxruntime.providers import open_provider

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
        reasons.append(TENSORRT_MISSING)
    if "polygraphy" in needs and not caps.polygraphy:
        reasons.append(POLYGRAPHY_MISSING)
    # One provider message covers both ORT needs; keep each text once, in order.
    reasons = list(dict.fromkeys(reasons))
    return "; ".join(reasons) if reasons else None




def requires(*needs) -> callable:
    """A Backend.unavailable for a backend that needs `needs` (see `missing`)."""
    return lambda: missing(probe(), needs)


def onnxruntime_missing() -> Optional[str]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed: pip install -e . (or pip install onnxruntime)"
    return None
