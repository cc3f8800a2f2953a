"""Content hashes that key the on-disk caches (exported graphs, engines)."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Iterable


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def module_source_hash(module, extra_files: Iterable[str] = ()) -> str:
    """Hash of the source of every Python module that defines the model's classes.

    Walks the module tree so a change to any submodule's code (not only the top
    class) invalidates the cache.
    """
    digest = hashlib.sha256()
    files = set()
    for sub in module.modules():
        try:
            files.add(inspect.getsourcefile(type(sub)))
        except TypeError:
            continue
    files.update(str(Path(f)) for f in extra_files)
    for path in sorted(f for f in files if f):
        digest.update(path.encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def state_dict_hash(module) -> str:
    """Hash of every parameter and buffer (names, dtypes, shapes and bytes)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{array.dtype}|{tuple(array.shape)}".encode())
        # Raw bytes through a uint8 view: works for every dtype, bfloat16 included.
        digest.update(array.flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def json_hash(obj) -> str:
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


# Attributes that are the module machinery, not what it computes with.
_MACHINERY = {"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", "_backward_pre_hooks",
              "_backward_hooks", "_is_full_backward_hook", "_forward_hooks", "_forward_hooks_with_kwargs",
              "_forward_hooks_always_called", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
              "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
              "_load_state_dict_post_hooks", "training", "_compiled_call_impl"}


def _plain(value, depth: int = 0):
    """A JSON-able image of a plain attribute value (numbers, strings, containers of them,
    arrays, tensors that are not parameters); None for what has no stable image."""
    import enum

    import numpy as np
    import torch

    if depth > 4:
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, (torch.dtype, torch.device, torch.Size)):
        return str(value)
    if isinstance(value, torch.Tensor):
        return {"tensor": sha256_bytes(value.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes()),
                "shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, np.ndarray):
        return {"array": sha256_bytes(np.ascontiguousarray(value).tobytes()), "shape": list(value.shape),
                "dtype": str(value.dtype)}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, torch.nn.Module):
        return None  # a submodule: walked on its own
    if callable(value):
        return getattr(value, "__qualname__", type(value).__name__)
    return None


def attribute_hash(module) -> str:
    """Hash of every submodule's plain attributes (constructor arguments kept on the module:
    a threshold, a top-k, a fixed size, a flag read from an environment variable at build
    time), beside its class and weights."""
    digest = hashlib.sha256()
    for name, sub in module.named_modules(remove_duplicate=False):
        state = {k: _plain(v) for k, v in sorted(vars(sub).items()) if k not in _MACHINERY}
        digest.update(json.dumps([name, type(sub).__qualname__, state], sort_keys=True, default=str).encode())
    return digest.hexdigest()


def output_hash(outputs, significant: int = 5) -> str:
    """Hash of a module's outputs (tensors, nested), floats rounded to `significant` digits:
    what it computes on a probe feed, steady across runs, changed by any setting that
    changes its answer."""
    import numpy as np
    import torch

    digest = hashlib.sha256()

    def walk(value, path: str):
        if isinstance(value, torch.Tensor):
            array = value.detach().cpu()
            array = array.float().numpy() if array.is_floating_point() else array.numpy()
            digest.update(f"{path}|{array.dtype}|{array.shape}".encode())
            if np.issubdtype(array.dtype, np.floating):
                finite = np.where(np.isfinite(array), array, 0.0).astype(np.float64)
                rounded = np.array([float(f"{x:.{significant}g}") for x in finite.ravel()]) if finite.size < 4096 \
                    else np.round(finite, significant - 1)
                digest.update(rounded.tobytes())
                digest.update(np.isfinite(array).tobytes())
            else:
                digest.update(np.ascontiguousarray(array).tobytes())
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")
        elif isinstance(value, dict):
            for k in sorted(value, key=str):
                walk(value[k], f"{path}.{k}")
        elif hasattr(value, "__dict__") and not isinstance(value, torch.nn.Module):
            walk(vars(value), path)

    walk(outputs, "")
    return digest.hexdigest()
