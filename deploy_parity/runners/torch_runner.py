"""PyTorch runner: eager reference or deploy module, on CPU (CUDA in torch_cuda_runner)."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from deploy_parity.contracts import TensorMeta
from deploy_parity.runners.base import Runner


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


class TorchRunner(Runner):
    """Runs a torch.nn.Module built lazily by `build_module` on activate.

    PyTorch has no graph to read a contract from, so the contract comes from the model
    case (`metas`). Inputs are converted with torch.from_numpy, which keeps the dtype:
    the module sees exactly what the feed holds.
    """

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
        super().__init__(name, backend, precision, output_names)
        self._build_module = build_module
        self._named_outputs = named_outputs
        self._metas = dict(metas)
        self.device = device
        self.module = None

    def activate_impl(self):
        import torch

        module = self._build_module()
        self.module = module.eval().to(self.device)
        self._torch = torch

    def get_input_metadata_impl(self):
        return self._metas

    def infer_impl(self, feed):
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(feed[name])).to(self.device) for name in self._metas]
        with torch.inference_mode():
            result = self.module(*args)
        return module_outputs(result, self.output_names, widen=(torch.bfloat16,), named=self._named_outputs)

    def deactivate_impl(self):
        self.module = None
