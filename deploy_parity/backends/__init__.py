"""Backends, one package each; importing this registers every backend and imports no GPU library.

backend.py     Backend, RunnerContext and the registry (BACKENDS, select_backends)
runner.py      the Runner interface every backend implements (activate / infer / deactivate)
capabilities   what this machine can run (torch.cuda, ONNX Runtime's providers by an opened
               session, TensorRT, Polygraphy) and why not, with how to fix it
pytorch/       the reference and the deploy module on CPU or CUDA, in fp32, fp16 or autocast
onnxruntime/   the session loader, provider set-up and runner: onnxrt-cpu, -cuda, -trt
tensorrt/      Polygraphy-built engines: profiles, build recipes, engine cache, runner

Each package's table states each of its backends' precision once (the tolerance rows
are looked up with it) and hands it to the runner from there.
"""

from deploy_parity.backends.backend import (DEFAULT_BACKENDS, BACKENDS, Backend, RunnerContext, onnx_for,
                                            register_backend, runner_name, select_backends)
from deploy_parity.backends.pytorch import reference_runner
import deploy_parity.backends.onnxruntime  # noqa: F401,E402  registers onnxrt-*
import deploy_parity.backends.tensorrt  # noqa: F401,E402  registers trt-*

__all__ = ["BACKENDS", "DEFAULT_BACKENDS", "Backend", "RunnerContext", "onnx_for", "reference_runner",
           "register_backend", "runner_name", "select_backends"]
