"""GPU backends: registered, lazily imported, and skipped with a reason a person can act on."""

from __future__ import annotations

import importlib.util
import textwrap

import pytest

import deploy_parity.backends.capabilities as gpu
from deploy_parity.backends import BACKENDS
from tests.suite_runs import REPO, run_pytest, run_python

GPU_NAMES = ["torch-cuda-fp32", "torch-cuda-fp16", "torch-cuda-autocast", "onnxrt-cuda", "onnxrt-trt",
             "trt-fp32", "trt-tf32", "trt-fp16"]

EVERYTHING = gpu.Capabilities(cuda=True, torch_cuda_build=True,
                              ort_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
                              tensorrt=True, polygraphy=True)


def test_every_gpu_backend_is_registered_as_gpu_with_its_precision():
    precisions = {name: BACKENDS[name].precision for name in GPU_NAMES}
    assert precisions == {
        "torch-cuda-fp32": "fp32", "torch-cuda-fp16": "fp16", "torch-cuda-autocast": "autocast",
        "onnxrt-cuda": "fp32", "onnxrt-trt": "tf32", "trt-fp32": "fp32", "trt-tf32": "tf32", "trt-fp16": "fp16",
    }
    assert all(BACKENDS[name].gpu for name in GPU_NAMES)


def test_nothing_missing_means_no_reason():
    for needs in [("cuda",), ("cuda", "ort-cuda"), ("cuda", "ort-trt", "tensorrt"), ("cuda", "tensorrt", "polygraphy")]:
        assert gpu.missing(EVERYTHING, needs) is None


def test_no_cuda_device_says_where_to_run():
    caps = gpu.Capabilities(**{**EVERYTHING.__dict__, "cuda": False})
    assert gpu.missing(caps, ("cuda",)) == (
        "no CUDA device visible to torch (torch.cuda.is_available() is False): run on the GPU runner, "
        "see README 'Nightly on a GPU runner'"
    )
    cpu_torch = gpu.Capabilities(**{**caps.__dict__, "torch_cuda_build": False})
    assert "CPU-only build" in gpu.missing(cpu_torch, ("cuda",))


def test_missing_cuda_provider_says_how_to_install_a_gpu_stack():
    caps = gpu.Capabilities(**{**EVERYTHING.__dict__, "ort_providers": ("CPUExecutionProvider",)})
    assert gpu.missing(caps, ("cuda", "ort-cuda")) == (
        "onnxruntime has no CUDAExecutionProvider (the CPU build): install a GPU stack: pip install -r "
        "requirements/gpu-cu13.txt (or gpu-cu12.txt), then pip install --no-deps -e . (docs/gpu.md)"
    )
    assert "TensorrtExecutionProvider" in gpu.missing(caps, ("cuda", "ort-trt", "tensorrt"))


def test_a_provider_the_build_lists_but_no_session_opens_gives_the_sessions_reason():
    """get_available_providers() lists CUDA and TensorRT wherever onnxruntime-gpu is installed; only a session tells."""
    why = "onnxruntime 1.31.1 lists TensorrtExecutionProvider but an opened session runs on ['CPUExecutionProvider']"
    caps = gpu.Capabilities(**{**EVERYTHING.__dict__,
                               "ort_providers": ("CUDAExecutionProvider", "CPUExecutionProvider"),
                               "ort_listed": EVERYTHING.ort_providers,
                               "ort_failures": (("TensorrtExecutionProvider", why),)})
    assert gpu.missing(caps, ("cuda", "ort-cuda")) is None
    assert gpu.missing(caps, ("cuda", "ort-trt", "tensorrt")) == why


def test_missing_tensorrt_says_how_to_install_it():
    caps = gpu.Capabilities(**{**EVERYTHING.__dict__, "tensorrt": False, "polygraphy": False})
    assert gpu.missing(caps, ("cuda", "tensorrt", "polygraphy")) == (
        "TensorRT is not installed: pip install -r requirements/gpu-cu13.txt (or gpu-cu12.txt), which pins it "
        "(TensorRT's libraries come from https://pypi.nvidia.com, see docs/gpu.md); "
        "Polygraphy is not installed: pip install -e . (a core dependency) or pip install polygraphy"
    )


def test_all_missing_parts_are_named_at_once():
    bare = gpu.Capabilities(cuda=False, torch_cuda_build=True, ort_providers=("CPUExecutionProvider",),
                            tensorrt=False, polygraphy=True)
    reason = gpu.missing(bare, ("cuda", "ort-trt", "tensorrt"))
    assert reason.count("; ") == 2
    assert reason.startswith("no CUDA device") and "TensorrtExecutionProvider" in reason and "pypi.nvidia.com" in reason


def test_reasons_on_this_machine_match_what_it_has():
    """The real probe: each backend names exactly what this machine lacks (None on a full GPU runner)."""
    import onnxruntime
    import torch

    has_cuda = torch.cuda.is_available()
    providers = onnxruntime.get_available_providers()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for name in GPU_NAMES:
        reason = BACKENDS[name].unavailable() or ""
        assert ("torch.cuda.is_available() is False" in reason) == (not has_cuda), (name, reason)
        if name == "onnxrt-cuda":
            assert ("no CUDAExecutionProvider" in reason) == ("CUDAExecutionProvider" not in providers)
        if name.startswith("trt-") or name == "onnxrt-trt":
            assert ("TensorRT is not installed" in reason) == (not has_trt)


def test_importing_the_gpu_modules_imports_no_tensorrt():
    result = run_python("-c", textwrap.dedent(
        """
        import sys
        import deploy_parity
        import deploy_parity.backends
        import deploy_parity.backends.tensorrt.runner
        import deploy_parity.backends.pytorch.runner
        import deploy_parity.backends.onnxruntime.runner
        import deploy_parity.backends.tensorrt.engine_cache, deploy_parity.backends.tensorrt.profiles, deploy_parity.contracts.artifact
        loaded = sorted(m for m in ("tensorrt", "polygraphy") if m in sys.modules)
        assert not loaded, f"imported at import time: {loaded}"
        # Asking every backend whether it can run looks for TensorRT without importing it,
        # unless onnxruntime lists its TensorRT provider: opening a session with it loads
        # TensorRT's libraries (import tensorrt), which is how the probe knows it works.
        from deploy_parity.backends import BACKENDS
        for backend in BACKENDS.values():
            backend.unavailable()
        import onnxruntime
        if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
            assert "tensorrt" not in sys.modules, "unavailable() imported tensorrt"
        print("ok")
        """), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.slow  # a pytest subprocess: ~5 s of imports on an idle machine
@pytest.mark.skipif(BACKENDS["trt-fp16"].unavailable() is None, reason="trt-fp16 can run here: nothing to skip")
def test_suite_items_on_an_unavailable_gpu_backend_skip_with_the_reason():
    """End to end through fixtures/selection.py: the parity suite on trt-fp16 skips, saying why."""
    result = run_pytest("--backend", "trt-fp16", "--model", "pose-rtmo", "-rs", "-q",
                        target="suites/test_parity.py::test_determinism", env={"PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert f"backend trt-fp16 unavailable: {BACKENDS['trt-fp16'].unavailable()}" in " ".join(result.stdout.split())
