"""torch -> ONNX export, checked and cached on disk.

The cache key covers everything that changes the graph: the model's source code and
weights, the deploy target (size, dtypes), the export options and the library
versions. A second run with nothing changed exports nothing. The code and weights are
hashed once per (case, target) and process (`_fingerprint`): a repeated lookup builds no
module, and neither does the first when the PyTorch runner already built it.

A cache entry is trusted only after it is verified: next to every graph a sidecar JSON
records the entry's key and the graph's sha256. A hit needs the sidecar to name this
key and the graph's bytes to hash to the recorded sha256 (the sidecar is written only
after the graph passed the ONNX checker, so the same bytes need no second check).
Anything else (no or unreadable sidecar, another entry's graph copied over this one, a
truncated or edited file) is exported again,
with a warning naming the entry and why (CacheEntryRebuilt; also in STATS.rebuilt and
run.json). Each entry has a lock file: two processes wanting the same entry export it
once, the second waits and then verifies the first one's graph. Graphs and sidecars are
written to temporary files and renamed into place, so no reader ever sees half of one.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from deploy_parity.case import DeployTarget, ModelCase
from deploy_parity.errors import ArtifactError, CacheEntryRebuilt, HarnessError, StorageFull, no_space
from deploy_parity.hashing import (attribute_hash, json_hash, module_source_hash, output_hash, sha256_file,
                                   state_dict_hash)
from deploy_parity.safe_paths import file_lock, inside
from deploy_parity.watchdog import outside_case_limit

log = logging.getLogger(__name__)

EXPORTERS = ("torchscript", "dynamo")
CACHE_FORMAT = 2  # sidecars with the entry's key and the graph's sha256
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
    rebuilt: list = field(default_factory=list)  # "file name: why it was not trusted"


STATS = ExportStats()
_LOCK = threading.Lock()
# Entries this process verified, by path: (inode, size, mtime_ns, key). A file changed
# since is verified again; an unchanged one is not hashed and checked on every lookup.
_VERIFIED: dict = {}
# Cache folders a write found full, with the reason: the run stops once, not per case.
_UNWRITABLE: dict = {}


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


def case_code_files(case: ModelCase) -> list:
    """Files whose code decides what the case builds, besides its modules' classes: where
    its build functions are defined (the constructor arguments they pass, fixed_size or
    box_detections_per_img, live there) and the case's declared source_files."""
    import inspect

    files = [str(Path(f)) for f in case.source_files]
    for function in (case.build_deploy, case.build_reference):
        function = getattr(function, "func", function)  # functools.partial
        try:
            files.append(inspect.getsourcefile(function))
        except TypeError:  # a builtin or C callable: nothing to hash
            continue
    return [f for f in files if f]


def module_fingerprint(case: ModelCase, module, target: Optional[DeployTarget] = None) -> dict:
    """What the deploy module is made of and what it does: its code (every class's file,
    the case's build functions' files, source_files), its weights (every parameter and
    buffer), its plain attributes (constructor arguments, settings read at build time), and,
    given the target, its answer to a fixed probe feed (a setting read from an environment
    variable, a config file or a helper module's constant inside forward() changes it).
    A module whose probe answer differs between two runs (random ops in forward) keys on
    the rest, and the fingerprint says so."""
    fingerprint = {"code": module_source_hash(module, case_code_files(case)), "weights": state_dict_hash(module),
                   "attributes": attribute_hash(module)}
    if target is not None:
        fingerprint["probe"] = probe_hash(case, module, target)
    return fingerprint


def probe_hash(case: ModelCase, module, target: DeployTarget) -> str:
    """The deploy module's answer to a fixed feed (seed 0, the export's sample size, batch
    1), rounded: run twice, "unsteady" when the two differ."""
    import torch

    height = target.height or case.sizes.export_height or case.sizes.min_side
    width = target.width or case.sizes.export_width or case.sizes.min_side
    args = _sample_inputs(case, target, height, width, 1)
    module.eval()
    try:
        with torch.inference_mode():
            first = output_hash(module(*[a.clone() for a in args]))
            second = output_hash(module(*[a.clone() for a in args]))
    except Exception as error:  # noqa: BLE001 - the check that runs the module reports it properly
        return f"the probe raised {type(error).__name__}"
    return first if first == second else "unsteady (its answer to one feed changes between runs)"


def export_key(case: ModelCase, target: DeployTarget, options: ExportOptions, module=None, *,
               fingerprint: Optional[dict] = None) -> str:
    fingerprint = fingerprint if fingerprint is not None else module_fingerprint(case, module, target)
    return json_hash(
        {
            "case": case.name,
            **fingerprint,
            "target": asdict(target),
            "options": asdict(options),
            "versions": library_versions(),
            "io": [case.input_names, case.output_names],
        }
    )[:24]


# The deploy module's fingerprint per (case, target), computed once per process: the
# first lookup builds the module to hash it (or takes the PyTorch runner's, which built
# it anyway); every later lookup computes its key without building anything. Per target,
# not per case: a case may load other weights or classes for another size.
_FINGERPRINTS: dict = {}


def _known_fingerprint(case: ModelCase, target: DeployTarget) -> Optional[dict]:
    known = _FINGERPRINTS.get((id(case), target))
    return known[1] if known is not None and known[0] is case else None  # the case is held: its id is not reused


def remember_deploy_module(case: ModelCase, target: DeployTarget, module) -> None:
    """Take the fingerprint from the deploy module for `target` built for another reason
    (the PyTorch runner's), so the export cache's first lookup of it builds none."""
    if _known_fingerprint(case, target) is None:
        _FINGERPRINTS[(id(case), target)] = (case, module_fingerprint(case, module, target))


def _fingerprint(case: ModelCase, target: DeployTarget) -> tuple:
    """(fingerprint, the module built to take it, or None when it was known already)."""
    known = _known_fingerprint(case, target)
    if known is not None:
        return known, None
    module = built_module(case, target)
    fingerprint = module_fingerprint(case, module, target)
    _FINGERPRINTS[(id(case), target)] = (case, fingerprint)
    return fingerprint, module


def built_module(case: ModelCase, target: DeployTarget):
    return case.deploy_module(target).eval()


def _clear_entry(path: Path) -> None:
    """Remove a distrusted entry's graph and sidecar, files or folders, so the export that
    follows can rename its own into place."""
    import shutil

    for item in (path, sidecar_path(path)):
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        elif item.exists() or item.is_symlink():
            item.unlink()


def sidecar_path(path) -> Path:
    return Path(path).with_suffix(".json")


def _stat_key(path: Path, key: str):
    st = path.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns, key)


def verify_entry(path, key: str, cache_format: int = CACHE_FORMAT) -> str:
    """Why the cached graph at `path` may not be used for `key` ("" when it may; "absent"
    when there is none). Reads the sidecar and hashes the graph."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return "absent"
    if not path.is_file():
        return "it is not a regular file"
    try:
        sidecar = json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError):
        return "no readable sidecar JSON next to it"
    if not isinstance(sidecar, dict) or sidecar.get("format") != cache_format:
        return "its sidecar was written by an older harness (no content hash)"
    if sidecar.get("key") != key:
        return f"its sidecar names key {sidecar.get('key')!r}, not this entry's {key!r} (copied from another entry?)"
    if sha256_file(path) != sidecar.get("onnx_sha256"):
        return ("the graph's bytes do not match the sha256 in its sidecar (replaced, edited or truncated after it was "
                "exported)")
    # No second ONNX checker run: the sidecar is written only after the graph passed
    # check_onnx, the bytes are those bytes, and the onnx version is part of the key.
    return ""


def export_onnx(
    case: ModelCase,
    target: DeployTarget,
    options: ExportOptions = ExportOptions(),
    cache_dir: Optional[Path] = None,
) -> Path:
    """Path of the checked ONNX graph for (case, target, options), exporting on a miss or
    when the cached entry fails verification (see the module docstring)."""
    # The whole lookup outside the case's time limit (its own, PARITY_BUILD_TIMEOUT): the
    # fingerprint builds the module and runs its probe; a miss exports.
    with outside_case_limit(f"export of {case.name} ({target.key()})"):
        return _export_onnx(case, target, options, cache_dir)


def _export_onnx(case: ModelCase, target: DeployTarget, options: ExportOptions, cache_dir) -> Path:
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR) / "onnx"
    fingerprint, module = _fingerprint(case, target)
    key = export_key(case, target, options, fingerprint=fingerprint)
    path = inside(cache_dir, f"{case.name}-{target.key()}-{key}.onnx")
    with _LOCK:
        try:
            if _VERIFIED.get(str(path)) == _stat_key(path, key):
                STATS.cache_hits += 1
                return path
        except OSError:
            pass
        cache_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(inside(cache_dir, f".{path.stem}.lock")):  # another process may be exporting it
            reason = verify_entry(path, key)
            if not reason:
                _VERIFIED[str(path)] = _stat_key(path, key)
                STATS.cache_hits += 1
                return path
            if reason != "absent":
                _clear_entry(path)  # whatever stands in its place (a folder named like the sidecar): rebuilt once
                message = f"export cache entry {path} not trusted: {reason}; exporting it again"
                log.warning(message)
                warnings.warn(CacheEntryRebuilt(message), stacklevel=2)
                STATS.rebuilt.append(f"{path.name}: {reason}")
            if str(cache_dir) in _UNWRITABLE:  # full already: not tried again per case
                raise StorageFull(_UNWRITABLE[str(cache_dir)])
            start = time.perf_counter()
            if module is None:  # a miss: now the module is needed
                module = built_module(case, target)
            _export(case, target, options, module, path, key)
            STATS.exports += 1
            STATS.export_seconds += time.perf_counter() - start
            _VERIFIED[str(path)] = _stat_key(path, key)
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

    from deploy_parity.adapters.base import Adapter

    nested = case.adapter is not None and type(case.adapter).named_outputs is not Adapter.named_outputs
    return NamedOutputs(module) if nested else module


def _export(case, target, options, module, path: Path, key: str) -> None:
    import torch

    original = module
    module = _flat_outputs_module(case, module)

    sizes = case.sizes
    # Sample at a size other than any special one so shape logic is traced, not folded.
    height = target.height or sizes.export_height or sizes.min_side
    width = target.width or sizes.export_width or sizes.min_side
    batch = min(2, case.max_batch)
    args = _sample_inputs(case, target, height, width, batch)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.onnx")
    sidecar_tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.json")
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
                dynamic_shapes=_dynamo_shapes(case, target, wrapped=module is not original),
                external_data=False,
            )
            program.save(str(tmp))
        check_onnx(tmp)
        sidecar_tmp.write_text(json.dumps({
            "format": CACHE_FORMAT, "key": key, "onnx_sha256": sha256_file(tmp), "case": case.name,
            "target": asdict(target), "options": asdict(options), "versions": library_versions(),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1))
        # Graph first, then its sidecar: a crash in between leaves a graph whose sidecar
        # does not match it, which the next lookup rebuilds. Each rename is atomic.
        os.replace(tmp, path)
        os.replace(sidecar_tmp, sidecar_path(path))
    except ArtifactError:
        raise
    except Exception as exc:
        if no_space(exc):
            _UNWRITABLE[str(path.parent)] = (f"export cache {path.parent} has no room for {case.name}'s graph "
                                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); free space "
                                             "or give the run another --parity-cache-dir")
            raise StorageFull(_UNWRITABLE[str(path.parent)]) from None
        raise HarnessError(f"export of {case.name} ({target.key()}, {options.exporter}) failed: {exc}") from exc
    finally:
        for leftover in (tmp, sidecar_tmp):
            if leftover.exists():
                leftover.unlink()


def _dynamo_shapes(case, target, wrapped: bool = False):
    from torch.export import Dim

    batch = Dim("batch", min=1, max=max(case.max_batch, 2))
    shapes = {}
    for spec in case.inputs:
        dims = {0: batch}
        if spec.role == "image" and target.height is None:
            dims.update({2: Dim("height", min=case.sizes.min_side, max=case.sizes.max_side),
                         3: Dim("width", min=case.sizes.min_side, max=case.sizes.max_side)})
        shapes[spec.name] = dims
    if wrapped:  # NamedOutputs.forward(*args): one varargs parameter, in input order
        return {"args": tuple(shapes[name] for name in case.input_names)}
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
