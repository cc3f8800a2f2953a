"""torch -> ONNX export, checked and cached on disk.

The cache key covers everything that changes the graph: the model's source code and
weights, the deploy target (size, dtypes), the export options and the library
versions. A second run with nothing changed exports nothing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from deploy_parity.case import DeployTarget, ModelCase
from deploy_parity.errors import ArtifactError, HarnessError
from deploy_parity.hashing import json_hash, module_source_hash, state_dict_hash

log = logging.getLogger(__name__)

EXPORTERS = ("torchscript", "dynamo")
DEFAULT_CACHE_DIR = Path(os.environ.get("PARITY_CACHE_DIR", Path.cwd() / ".parity_cache"))


@dataclass(frozen=True)
class ExportOptions:
    opset: int = 17
    exporter: str = "torchscript"  # TorchScript-based; "dynamo" uses torch.export
    do_constant_folding: bool = True

    def __post_init__(self):
        if self.opset < 17:
            raise HarnessError(f"opset {self.opset} < 17: keypoint decoding needs opset >= 16, the harness uses >= 17")
        if self.exporter not in EXPORTERS:
            raise HarnessError(f"unknown exporter {self.exporter!r}; known: {EXPORTERS}")


@dataclass
class ExportStats:
    """What this process exported or found cached; the suites put it in the report."""

    exports: int = 0
    cache_hits: int = 0
    export_seconds: float = 0.0


STATS = ExportStats()
_LOCK = threading.Lock()


def library_versions() -> dict:
    import onnx
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__}


def _sample_inputs(case: ModelCase, target: DeployTarget, height: int, width: int, batch: int):
    from deploy_parity.inputs import make_feed

    import torch

    feed = make_feed(case, height, width, batch, seed=0, dtypes=target.dtypes)
    return tuple(torch.from_numpy(feed[name]) for name in case.input_names)


def _dynamic_axes(case: ModelCase, target: DeployTarget) -> dict:
    axes = {}
    for spec in case.inputs:
        dims = {0: "batch"}
        if spec.role == "image" and target.height is None:
            dims.update({2: "height", 3: "width"})
        axes[spec.name] = dims
    for out in case.outputs:
        axes[out.name] = {0: "batch"}
    return axes


def export_key(case: ModelCase, target: DeployTarget, options: ExportOptions, module) -> str:
    return json_hash(
        {
            "case": case.name,
            "code": module_source_hash(module, case.source_files),
            "weights": state_dict_hash(module),
            "target": asdict(target),
            "options": asdict(options),
            "versions": library_versions(),
            "io": [case.input_names, case.output_names],
        }
    )[:24]


def export_onnx(
    case: ModelCase,
    target: DeployTarget,
    options: ExportOptions = ExportOptions(),
    cache_dir: Optional[Path] = None,
) -> Path:
    """Path of the checked ONNX graph for (case, target, options), exporting on a miss."""
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR) / "onnx"
    module = case.build_deploy(target).eval()
    key = export_key(case, target, options, module)
    path = cache_dir / f"{case.name}-{target.key()}-{key}.onnx"
    with _LOCK:
        if path.is_file():
            STATS.cache_hits += 1
            return path
        cache_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        _export(case, target, options, module, path)
        STATS.exports += 1
        STATS.export_seconds += time.perf_counter() - start
        log.info("exported %s in %.1fs", path.name, time.perf_counter() - start)
    return path


def _flat_outputs_module(case, module):
    """The deploy module with its outputs flattened to the case's output names, in order:
    what the exporter sees. A module returning a tensor, tuple or dict already in that
    order is exported as it is; nested results (torchvision's list of per-image dicts,
    Ultralytics' (prediction, features) tuple) go through the case's adapter."""
    import torch

    class NamedOutputs(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            named = case.named_outputs(self.inner(*args))
            return tuple(named[name] for name in case.output_names)

    return NamedOutputs(module) if case.adapter is not None else module


def _export(case, target, options, module, path: Path) -> None:
    import torch

    module = _flat_outputs_module(case, module)

    sizes = case.sizes
    # Sample at a size other than any special one so shape logic is traced, not folded.
    height = target.height or sizes.export_height or sizes.min_side
    width = target.width or sizes.export_width or sizes.min_side
    batch = min(2, case.max_batch)
    args = _sample_inputs(case, target, height, width, batch)
    tmp = path.with_suffix(f".tmp{os.getpid()}.onnx")
    try:
        if options.exporter == "torchscript":
            torch.onnx.export(
                module,
                args,
                str(tmp),
                dynamo=False,
                input_names=case.input_names,
                output_names=case.output_names,
                opset_version=options.opset,
                dynamic_axes=_dynamic_axes(case, target),
                do_constant_folding=options.do_constant_folding,
            )
        else:
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                input_names=case.input_names,
                output_names=case.output_names,
                opset_version=options.opset,
                dynamic_shapes=_dynamo_shapes(case, target),
                external_data=False,
            )
            program.save(str(tmp))
        check_onnx(tmp)
        os.replace(tmp, path)  # atomic: a killed export never leaves a half-written cache entry
    except ArtifactError:
        raise
    except Exception as exc:
        raise HarnessError(f"export of {case.name} ({target.key()}, {options.exporter}) failed: {exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    path.with_suffix(".json").write_text(
        json.dumps({"case": case.name, "target": asdict(target), "options": asdict(options),
                    "versions": library_versions()}, indent=1)
    )


def _dynamo_shapes(case, target):
    from torch.export import Dim

    batch = Dim("batch", min=1, max=max(case.max_batch, 2))
    shapes = {}
    for spec in case.inputs:
        dims = {0: batch}
        if spec.role == "image" and target.height is None:
            dims.update({2: Dim("height", min=case.sizes.min_side, max=case.sizes.max_side),
                         3: Dim("width", min=case.sizes.min_side, max=case.sizes.max_side)})
        shapes[spec.name] = dims
    return shapes


def check_onnx(path) -> None:
    """onnx.checker plus strict shape inference; ArtifactError naming the file if either fails."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(path, "ONNX file not found")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ArtifactError(path, f"not a readable ONNX model: {exc}".splitlines()[0]) from exc
    try:
        onnx.checker.check_model(model, full_check=False)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        raise ArtifactError(path, f"fails the ONNX checker / shape inference: {exc}".splitlines()[0]) from exc
