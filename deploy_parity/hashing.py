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
