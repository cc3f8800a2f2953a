"""PyTorch on CUDA, in the precision a deployment would use.

Modes (the precision under test is the runner's own choice, never the caller's):
  fp32      the module in float32, TF32 switched OFF for convolutions and matmuls while
            it runs (PyTorch leaves cuDNN TF32 on by default, which is not fp32).
  half      module.half(), and every floating-point input cast to float16 ON THE
            DEVICE, inside the runner: this cast is the precision under test. The feed
            itself must still have the dtype the case declares (float32): the contract
            check refuses a float16 feed, so a caller cannot pre-cast and hide it.
  autocast  float32 module and inputs under torch.autocast(float16): PyTorch picks
            per op (convs/matmuls in fp16, reductions/exp in fp32).

Outputs in float16/bfloat16 are returned as float32: an exact conversion, so the
comparators do their own arithmetic (areas, OKS) in float32, not in half.

Timing: the device is synchronised (torch.cuda.synchronize) before and after the
forward pass, so `device_seconds` is the GPU work of this call and nothing queued
earlier; the first call (cold: cuDNN set-up, lazy init) is kept apart in
`first_call_seconds` (bug class 5: one cold run says nothing).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np

from deploy_parity.contracts import TensorMeta
from deploy_parity.errors import BackendUnavailable, HarnessError
from deploy_parity.runners.base import Runner
from deploy_parity.runners.torch_runner import module_outputs

MODES = {"fp32": "fp32", "half": "fp16", "autocast": "autocast"}  # mode -> precision (tolerance rows)

NO_CUDA = (
    "no CUDA device visible to torch (torch.cuda.is_available() is False): run on the GPU runner, "
    "see README 'Nightly on a GPU runner'"
)
CPU_ONLY_TORCH = "this torch is a CPU-only build (torch.version.cuda is None): install a CUDA build of torch"


@contextlib.contextmanager
def ieee_fp32(torch):
    """Full-precision fp32 convolutions and matmuls for the duration (restored after)."""
    cudnn = torch.backends.cudnn
    conv = getattr(cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9 API
        # Setting conv alone to "ieee" leaves cuDNN's legacy flag (allow_tf32, still True)
        # disagreeing with it, and from then on any read of torch.backends.cudnn.allow_tf32
        # (torch.backends.cudnn.flags(), inductor, user code inside forward()) raises
        # "you have used a mix of the legacy and new APIs". So: legacy flag off first (it
        # resets conv/rnn), then conv, rnn and matmul to "ieee" explicitly; legacy reads
        # inside then say False. Restored in reverse order.
        handles = [h for h in (conv, getattr(cudnn, "rnn", None), torch.backends.cuda.matmul)
                   if h is not None and hasattr(h, "fp32_precision")]
        saved = [h.fp32_precision for h in handles]
        try:
            saved_legacy = bool(cudnn.allow_tf32)
        except RuntimeError:  # already mixed by someone else: leave the legacy flag alone
            saved_legacy = None
        try:
            with warnings.catch_warnings():  # the legacy setter may warn that it is deprecated
                warnings.simplefilter("ignore")
                if saved_legacy is not None:
                    cudnn.allow_tf32 = False
                for handle in handles:
                    handle.fp32_precision = "ieee"
            yield
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if saved_legacy is not None:
                    cudnn.allow_tf32 = saved_legacy
                for handle, value in zip(handles, saved):
                    handle.fp32_precision = value
    else:
        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _is_dtype_mismatch(error: RuntimeError) -> bool:
    text = str(error)
    return ("should be the same" in text or "expected scalar type" in text or "dtype" in text.lower()) and (
        "Half" in text or "float16" in text.lower()
    )


class TorchCudaRunner(Runner):
    """Runs the module built by `build_module` on `device` in one of MODES.

    `device` is "cuda" for the GPU backends; the same code runs on "cpu" so the
    casting and contract logic is tested on machines without a GPU (those runs say
    nothing about CUDA numerics).
    """

    def __init__(
        self,
        name: str,
        build_module: Callable[[], "object"],
        metas: Mapping[str, TensorMeta],
        output_names: Sequence[str],
        mode: str = "fp32",
        backend: str = "",
        device: str = "cuda",
        named_outputs: Callable = None,
    ):
        if mode not in MODES:
            raise HarnessError(f"unknown torch CUDA mode {mode!r}; known {sorted(MODES)}")
        super().__init__(name, backend or f"torch-cuda-{mode}", MODES[mode], output_names)
        self.mode = mode
        self.device_name = device
        self._build_module = build_module
        self._named_outputs = named_outputs
        self._metas = dict(metas)
        self.module = None
        self.device_seconds = 0.0
        self.first_call_seconds = None

    def activate_impl(self):
        import torch

        self._torch = torch
        self.device = torch.device(self.device_name)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            why = NO_CUDA
            if torch.version.cuda is None:
                why += f"; {CPU_ONLY_TORCH}"
            raise BackendUnavailable(why)
        module = self._build_module().eval().to(self.device)
        self.module = module.half() if self.mode == "half" else module

    def get_input_metadata_impl(self):
        return self._metas

    def _synchronize(self):
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)

    def infer_impl(self, feed):
        torch = self._torch
        args = []
        for name in self._metas:
            tensor = torch.from_numpy(np.ascontiguousarray(feed[name])).to(self.device)
            if self.mode == "half" and tensor.is_floating_point():
                tensor = tensor.half()  # on the device: the precision under test
            args.append(tensor)
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=torch.float16)
            if self.mode == "autocast"
            else contextlib.nullcontext()
        )
        self._synchronize()
        start = time.perf_counter()
        with torch.inference_mode(), ieee_fp32(torch), autocast:
            try:
                result = self.module(*args)
            except RuntimeError as error:
                if self.mode == "half" and _is_dtype_mismatch(error):
                    raise HarnessError(
                        f"{self.name}: the module is not half-safe: {str(error).splitlines()[0]}. Something in "
                        "forward() makes a float32 tensor (e.g. images.float()) that meets float16 weights; cast "
                        "to the weights' dtype instead, or test this model with torch-cuda-autocast"
                    ) from error
                raise
            self._synchronize()
        seconds = time.perf_counter() - start
        self.device_seconds += seconds
        if self.first_call_seconds is None:
            self.first_call_seconds = seconds
        # Half outputs widen to float32: exact, and the comparators then read one dtype.
        return module_outputs(result, self.output_names, widen=(torch.float16, torch.bfloat16),
                              named=self._named_outputs)

    def deactivate_impl(self):
        self.module = None
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()
