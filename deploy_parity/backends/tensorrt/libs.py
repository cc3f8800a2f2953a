"""Make pip-installed CUDA and TensorRT libraries findable where their users look.

Both gaps show on a driver-only runner (no CUDA toolkit under /usr/local/cuda, nothing
on LD_LIBRARY_PATH), where everything CUDA comes from wheels:

1. Polygraphy's CUDA wrapper (polygraphy/cuda/cuda.py, `_find_cuda_lib_dirs`) globs
   `libcudart.so*` in LD_LIBRARY_PATH, /usr/local/cuda/lib64, /usr/lib, /lib and the
   CUDA 12 wheel's `nvidia/cuda_runtime/lib`. CUDA 13's wheels (nvidia-cuda-runtime 13.x,
   which torch >= 2.11 installs through cuda-toolkit) keep it in `nvidia/cu13/lib`, which
   that search misses; it then tries `ctypes.CDLL("libcudart.so")`, a name no wheel
   ships (only libcudart.so.13), and TrtRunner cannot make a stream.
   `expose_cuda_runtime()` puts the wheel's directory first on os.environ
   ["LD_LIBRARY_PATH"], which is the list Polygraphy reads (in Python) when its wrapper
   is first made; it then loads the library by its full path. (The dynamic loader's
   own search path is fixed when the process starts; this does not change it.)

2. pip's TensorRT keeps libnvinfer.so.N, libnvinfer_plugin.so.N and libnvonnxparser.so.N
   in the `tensorrt_libs` package, loaded only by `import tensorrt`. ONNX Runtime's
   TensorRT provider library (NEEDED: libnvinfer.so.10, libnvonnxparser.so.10 in
   onnxruntime-gpu 1.26 and 1.31) is dlopened by ONNX Runtime and resolves them only if
   they are already loaded. `load_tensorrt_libraries()` imports tensorrt and loads
   those three from tensorrt_libs before such a session is made.

Pure Python (ctypes, glob): importing this module loads nothing.
"""

from __future__ import annotations

import ctypes
import glob
import importlib
import importlib.util
import os
from pathlib import Path
from typing import Iterable, MutableMapping, Optional

# tensorrt_libs' libraries ONNX Runtime's TensorRT provider needs, in load order (each needs the one before).
TENSORRT_LIBRARIES = ("libnvinfer.so.*", "libnvinfer_plugin.so.*", "libnvonnxparser.so.*")


def _nvidia_roots() -> list:
    """The `nvidia` namespace package's directories (one per site-packages holding NVIDIA wheels)."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) for p in spec.submodule_search_locations]


def cuda_runtime_dirs(roots: Optional[Iterable] = None) -> list:
    """Directories holding a wheel's libcudart.so.N: nvidia/cuNN/lib (CUDA 13 on), nvidia/cuda_runtime/lib (CUDA 12)."""
    found = []
    for root in (_nvidia_roots() if roots is None else [Path(r) for r in roots]):
        candidates = sorted(root.glob("cu[0-9]*/lib"), reverse=True) + [root / "cuda_runtime" / "lib"]
        for directory in candidates:
            if directory.is_dir() and glob.glob(str(directory / "libcudart.so*")):
                found.append(str(directory))
    return list(dict.fromkeys(found))


def expose_cuda_runtime(environ: Optional[MutableMapping] = None, roots: Optional[Iterable] = None) -> list:
    """Put the wheels' CUDA runtime directories first on environ['LD_LIBRARY_PATH'] (for Polygraphy). Returns them."""
    environ = os.environ if environ is None else environ
    dirs = cuda_runtime_dirs(roots)
    current = [p for p in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    missing = [d for d in dirs if d not in current]
    if missing:
        environ["LD_LIBRARY_PATH"] = os.pathsep.join(missing + current)
    return dirs


def tensorrt_libs_dir() -> Optional[str]:
    try:
        spec = importlib.util.find_spec("tensorrt_libs")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def load_tensorrt_libraries(loader=ctypes.CDLL) -> dict:
    """Import tensorrt (if installed) and load tensorrt_libs' libraries globally.

    Returns {"version": None} when TensorRT is not installed; else its version, the
    tensorrt_libs directory and the libraries loaded. An installed TensorRT that fails
    to import raises (a broken install must be loud, not a skip).
    """
    if importlib.util.find_spec("tensorrt") is None:
        return {"version": None}
    tensorrt = importlib.import_module("tensorrt")
    info = {"version": str(getattr(tensorrt, "__version__", "unknown")), "libs_dir": tensorrt_libs_dir(), "loaded": []}
    if info["libs_dir"]:
        for pattern in TENSORRT_LIBRARIES:
            for path in sorted(glob.glob(os.path.join(info["libs_dir"], pattern))):
                try:
                    loader(path, mode=getattr(os, "RTLD_GLOBAL", 0))
                except OSError as exc:
                    info.setdefault("failed", []).append(f"{os.path.basename(path)}: {exc}")
                else:
                    info["loaded"].append(os.path.basename(path))
    return info
