"""What a backend is, and the registry the suites select from.

A backend is a name, the precision its tolerance rows are looked up with (stated once,
in its package's table, and handed to the runner from there), a factory that builds a
runner for one (case, deploy target), and an `unavailable()` that says why it cannot
run here and how to fix that (the suites skip its tests with that text). The packages
beside this module register their backends on import and import no GPU library doing so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from deploy_parity.case import DeployTarget, ModelCase
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
    # TensorRT engines at most per model and backend (deploy_parity/backends/tensorrt/budget.py).
    engine_budget: int = 16  # budget.DEFAULT_BUDGET; the plugin sets --engine-budget


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


BACKENDS: dict[str, Backend] = {}

DEFAULT_BACKENDS = ("torch-cpu", "onnxrt-cpu")


def register_backend(backend: Backend) -> None:
    BACKENDS[backend.name] = backend


def select_backends(names) -> list:
    if not names:
        return [BACKENDS[n] for n in DEFAULT_BACKENDS]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise UnknownNameError("backend", unknown, BACKENDS)
    return [BACKENDS[n] for n in names]
