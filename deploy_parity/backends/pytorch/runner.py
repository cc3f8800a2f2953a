"""PyTorch runner: the eager reference or the deploy module, on CPU or CUDA, in one precision.

One class, a device and a precision (the precision is the runner's own choice, never
the caller's; the backend table in __init__.py states it once):
  fp32      the module in float32. On CUDA, TF32 is switched OFF for convolutions and
            matmuls while it runs (PyTorch leaves cuDNN TF32 on by default, which is not
            fp32).
  fp16      module.half(), and every floating-point input cast to float16 ON THE
            DEVICE, inside the runner: this cast is the precision under test. The feed
            itself must still have the dtype the case declares (float32): the contract
            check refuses a float16 feed, so a caller cannot pre-cast and hide it.
  autocast  float32 module and inputs under torch.autocast(float16): PyTorch picks
            per op (convs/matmuls in fp16, reductions/exp in fp32).
  fp64      module.double(), floating-point inputs cast to float64, float64 the default
            dtype while it runs: the reference's float64 shadow (deploy_parity/compare/
            noise.py), never a backend under test.
The fp16 and autocast modes run on device "cpu" too: that tells whether a model is
half-safe before a GPU exists (CPU half kernels say nothing about CUDA numerics).

PyTorch has no graph to read a contract from, so the contract comes from the model case
(`metas`). Inputs are converted with torch.from_numpy, which keeps the dtype: the module
sees exactly what the feed holds. Outputs in bfloat16 (and float16 on CUDA and in the
half modes) come back as float32: an exact conversion, so the comparators do their own
arithmetic (areas, OKS) in float32, not in half.

Timing: on CUDA the device is synchronised before and after the forward pass, so
`device_seconds` is the GPU work of this call and nothing queued earlier; the first call
(cold: cuDNN set-up, lazy init) is kept apart in `first_call_seconds` (bug class 5: one
cold run says nothing).
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np

from deploy_parity.contracts import TensorMeta
from deploy_parity.errors import BackendUnavailable, HarnessError
from deploy_parity.backends.capabilities import CPU_ONLY_TORCH, NO_CUDA
from deploy_parity.backends.runner import Runner

PRECISIONS = ("fp32", "fp16", "autocast", "fp64")



def module_outputs(result, output_names: Sequence[str], widen: tuple = (), named: Callable = None) -> dict:
    """A module's result as {output name: numpy array}.

    named: the case's ModelCase.named_outputs (an adapter's reading of nested results);
    without it a dict is read by name and a tensor or tuple by position.
    Tensors whose dtype is in `widen` come back as float32 (exact for fp16/bf16; numpy
    has no bfloat16); every other dtype comes back as the module produced it.
    """
    import torch

    if named is not None:
        tensors = named(result)
        return {name: (tensors[name].float() if tensors[name].dtype in widen else tensors[name]).detach().cpu().numpy()
                for name in output_names}
    if isinstance(result, torch.Tensor):
        result = (result,)
    if isinstance(result, dict):
        result = tuple(result[n] for n in output_names)
    return {
        name: (t.float() if t.dtype in widen else t).detach().cpu().numpy()
        for name, t in zip(output_names, result)
    }


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


@contextlib.contextmanager
def _default_dtype(torch, dtype):
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def _float64_shadow(module, torch):
    """`module` in float64, each layer that holds weights fed float64: a forward() that
    makes its own float32 tensor (images.float() / 255) still runs, in float64 from the
    first layer on. Only the reference's shadow runs this way."""

    def widen(layer, args):
        return tuple(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)

    # A copy: a build function may hand out one shared module, which must stay float32.
    module = copy.deepcopy(module).double()
    for layer in module.modules():
        if any(True for _ in layer.parameters(recurse=False)):
            layer.register_forward_pre_hook(widen)
    return module


def _is_dtype_mismatch(error: RuntimeError) -> bool:
    text = str(error)
    return ("should be the same" in text or "expected scalar type" in text or "dtype" in text.lower()) and (
        "Half" in text or "float16" in text.lower()
    )


class TorchRunner(Runner):
    """Runs the module built lazily by `build_module` (on activate) on `device` in `precision`."""

    def __init__(
        self,
        name: str,
        build_module: Callable[[], "object"],
        metas: Mapping[str, TensorMeta],
        output_names: Sequence[str],
        backend: str = "torch-cpu",
        precision: str = "fp32",
        device: str = "cpu",
        named_outputs: Callable = None,
    ):
        if precision not in PRECISIONS:
            raise HarnessError(f"{name}: unknown PyTorch precision {precision!r}; expected one of {list(PRECISIONS)}")
        super().__init__(name, backend, precision, output_names)
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
        # The shadows work on a copy: a build function may hand out one shared module,
        # which must stay the float32 reference.
        self.module = (copy.deepcopy(module).half() if self.backend == "reference-shadow" else module.half()) \
            if self.precision == "fp16" else module
        if self.precision == "fp64":
            self.module = _float64_shadow(module, torch)
        # Half outputs widen to float32 on CUDA and in the half modes (exact; the comparators
        # then read one dtype). On CPU in fp32 (torch-cpu, the reference) only bfloat16 does,
        # which numpy lacks: a float16 output there is what the module really produced.
        widen_half = self.device.type == "cuda" or self.precision != "fp32"
        self._widen = (torch.bfloat16,) + ((torch.float16,) if widen_half else ())

    def get_input_metadata_impl(self):
        return self._metas

    def _synchronize(self):
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)

    def _numerics(self):
        """The context the forward pass runs in: IEEE fp32 on CUDA, autocast in that mode."""
        torch = self._torch
        stack = contextlib.ExitStack()
        if self.device.type == "cuda":
            stack.enter_context(ieee_fp32(torch))
        if self.precision == "autocast":
            stack.enter_context(torch.autocast(device_type=self.device.type, dtype=torch.float16))
        if self.precision == "fp64":  # tensors the module makes itself (torch.zeros, ...) in float64 too
            stack.enter_context(_default_dtype(torch, torch.float64))
        return stack

    def infer_impl(self, feed):
        torch = self._torch
        args = []
        for name in self._metas:
            array = np.ascontiguousarray(feed[name])
            if not array.flags.writeable:  # a shared feed (inputs.FeedCache): the module may write into its input
                array = array.copy()
            tensor = torch.from_numpy(array).to(self.device)
            if self.precision == "fp16" and tensor.is_floating_point():
                tensor = tensor.half()  # on the device: the precision under test
            elif self.precision == "fp64" and tensor.is_floating_point():
                tensor = tensor.double()
            args.append(tensor)
        self._synchronize()
        start = time.perf_counter()
        with torch.inference_mode(), self._numerics():
            try:
                result = self.module(*args)
            except RuntimeError as error:
                if self.precision == "fp16" and _is_dtype_mismatch(error):
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
        return module_outputs(result, self.output_names, widen=self._widen, named=self._named_outputs)

    def deactivate_impl(self):
        self.module = None
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()
