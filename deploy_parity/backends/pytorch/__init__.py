"""PyTorch backends: the deploy module (what gets exported) on CPU or CUDA, and the reference.

The table below states each backend's device and precision once; the runner takes both
from it (deploy_parity/backends/pytorch/runner.py says what each precision does).
"""

from __future__ import annotations

from deploy_parity.backends.backend import Backend, RunnerContext, register_backend, runner_name
from deploy_parity.backends.capabilities import requires
from deploy_parity.case import DeployTarget, ModelCase
from deploy_parity.contracts import TensorMeta, metas_for_case
from deploy_parity.export.onnx_exporter import remember_deploy_module

#          name                   device  precision  description
TABLE = (("torch-cpu", "cpu", "fp32", "the deploy module (what gets exported) run by PyTorch on CPU"),
         ("torch-cuda-fp32", "cuda", "fp32", "the deploy module run by PyTorch on CUDA in fp32 (TF32 off)"),
         ("torch-cuda-fp16", "cuda", "fp16", "the deploy module on CUDA after .half(); float inputs cast on the device"),
         ("torch-cuda-autocast", "cuda", "autocast", "the deploy module on CUDA under torch.autocast(float16)"))


def deploy_runner(case: ModelCase, target: DeployTarget, backend: str = "torch-cpu", device: str = "cpu",
                  precision: str = "fp32"):
    """The case's deploy module for `target`, as a (not yet activated) runner."""
    from deploy_parity.backends.pytorch.runner import TorchRunner

    def build():
        module = case.deploy_module(target)
        remember_deploy_module(case, target, module)  # before any .half(): the export cache keys on this module
        return module

    return TorchRunner(runner_name(case, backend, target), build,
                       metas_for_case(case, target),  # the feed keeps its declared dtypes in every precision
                       case.output_names, backend=backend, precision=precision, device=device,
                       named_outputs=case.named_outputs)


def _factory(name: str, device: str, precision: str):
    def factory(case: ModelCase, target: DeployTarget, context: RunnerContext):
        return deploy_runner(case, target, name, device, precision)

    return factory


for _name, _device, _precision, _description in TABLE:
    register_backend(Backend(_name, _precision, _description, _factory(_name, _device, _precision),
                             requires("cuda") if _device == "cuda" else (lambda: None),
                             gpu=_device == "cuda", artifact="torch"))


def reference_runner(case: ModelCase, precision: str = "fp32"):
    """The reference: the eager PyTorch model on CPU in fp32, taking every declared dtype.

    precision "fp64" (or "fp16", "autocast") gives the reference's shadow, the same model
    on the same feed in that precision, which measures its own rounding
    (deploy_parity/compare/noise.py)."""
    from deploy_parity.backends.pytorch.runner import TorchRunner

    metas = metas_for_case(case, DeployTarget(None, None, case.default_dtypes()))
    # The eager model takes every dtype the case declares, at any accepted size.
    metas = {spec.name: TensorMeta(spec.name, tuple(spec.dtypes), metas[spec.name].shape) for spec in case.inputs}
    name = f"{case.name}/reference" + ("" if precision == "fp32" else f"-{precision}-shadow")
    return TorchRunner(name, case.reference_module, metas, case.output_names,
                       backend="reference" if precision == "fp32" else "reference-shadow", precision=precision,
                       named_outputs=case.named_outputs)
