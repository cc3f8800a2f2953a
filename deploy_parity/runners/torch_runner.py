"""PyTorch runner: eager reference or deploy module, on CPU (CUDA in torch_cuda_runner)."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from deploy_parity.contracts import TensorMeta
from deploy_parity.runners.base import Runner


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
    ):
        super().__init__(name, backend, precision, output_names)
        self._build_module = build_module
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
        if isinstance(result, torch.Tensor):
            result = (result,)
        if isinstance(result, dict):
            result = tuple(result[n] for n in self.output_names)
        # numpy has no bfloat16; every other dtype comes back as the module produced it.
        return {
            name: (t.float() if t.dtype == torch.bfloat16 else t).detach().cpu().numpy()
            for name, t in zip(self.output_names, result)
        }

    def deactivate_impl(self):
        self.module = None
