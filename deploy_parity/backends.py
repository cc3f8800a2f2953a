"""Backends the suites can run: name -> how to build a runner for a (case, deploy target).

A backend that cannot run here (no GPU, no TensorRT, no CUDA provider) says why and
how to fix it; the suites skip its tests with that reason. Nothing here imports a GPU
library at import time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from deploy_parity.case import DeployTarget, ModelCase
from deploy_parity.contracts import metas_for_case
from deploy_parity.errors import UnknownNameError
from deploy_parity.export.onnx_exporter import ExportOptions, export_onnx


@dataclass
class RunnerContext:
    """Session-wide settings every runner factory gets."""

    cache_dir: Path
    export_options: ExportOptions = field(default_factory=ExportOptions)
    # Seconds one check may run before it is interrupted as TIMEOUT (deploy_parity/watchdog.py);
    # None: no limit. The pytest plugin sets it from --case-timeout / PARITY_CASE_TIMEOUT.
    case_timeout: Optional[float] = None


@dataclass(frozen=True)
class Backend:
    name: str
    precision: str
    description: str
    factory: Callable  # (case, target, context) -> Runner (not yet activated)
    unavailable: Callable[[], Optional[str]] = lambda: None  # None, or why not + how to fix
    gpu: bool = False
    # What the backend runs: "torch" (a module; takes what the case declares), "onnx" (a
    # graph whose declared shapes may be narrower) or "engine" (profiles narrower still).
    artifact: str = "onnx"
    # Backends whose results vary from run to run by design (none yet) skip determinism.
    deterministic: bool = True


def onnx_for(case: ModelCase, target: DeployTarget, context: RunnerContext) -> Path:
    """The user's own .onnx if the case names one, else our cached export."""
    if case.onnx_path is not None:
        return case.onnx_path
    return export_onnx(case, target, context.export_options, context.cache_dir)


def runner_name(case: ModelCase, backend: str, target: DeployTarget) -> str:
    return f"{case.name}/{backend}/{target.key()}"


def _torch_cpu(case, target, context):
    from deploy_parity.runners.torch_runner import TorchRunner

    return TorchRunner(
        runner_name(case, "torch-cpu", target),
        lambda: case.build_deploy(target),
        metas_for_case(case, target),
        case.output_names,
        named_outputs=case.named_outputs,
    )


def _onnxrt_cpu(case, target, context):
    from deploy_parity.runners.onnxrt_runner import OnnxRuntimeRunner

    return OnnxRuntimeRunner(
        runner_name(case, "onnxrt-cpu", target),
        onnx_for(case, target, context),
        providers=["CPUExecutionProvider"],
        output_names=case.output_names,
        dim_bounds=metas_for_case(case, target),
    )


def _onnxruntime_missing() -> Optional[str]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed: pip install -e . (or pip install onnxruntime)"
    return None


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> None:
    BACKENDS[backend.name] = backend


register_backend(
    Backend("torch-cpu", "fp32", "the deploy module (what gets exported) run by PyTorch on CPU", _torch_cpu,
            artifact="torch")
)
register_backend(
    Backend("onnxrt-cpu", "fp32", "the exported graph on ONNX Runtime's CPU provider", _onnxrt_cpu, _onnxruntime_missing)
)

DEFAULT_BACKENDS = ("torch-cpu", "onnxrt-cpu")


def select_backends(names) -> list:
    if not names:
        return [BACKENDS[n] for n in DEFAULT_BACKENDS]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise UnknownNameError("backend", unknown, BACKENDS)
    return [BACKENDS[n] for n in names]


def reference_runner(case: ModelCase):
    """The reference: the eager PyTorch model on CPU in fp32, taking every declared dtype."""
    from deploy_parity.contracts import TensorMeta
    from deploy_parity.runners.torch_runner import TorchRunner

    metas = metas_for_case(case, DeployTarget(None, None, case.default_dtypes()))
    # The eager model takes every dtype the case declares, at any accepted size.
    metas = {spec.name: TensorMeta(spec.name, tuple(spec.dtypes), metas[spec.name].shape) for spec in case.inputs}
    return TorchRunner(f"{case.name}/reference", case.build_reference, metas, case.output_names, backend="reference",
                       named_outputs=case.named_outputs)
