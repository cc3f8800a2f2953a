"""The probe child (`gpu_smoke.py --probe JSON`): what this interpreter has. Python and the
third-party modules, torch and CUDA, ONNX Runtime's providers, the harness's imports, and
which wheel-provided modules are present; written to JSON after each step, so a hang or a
crash later still leaves what was found before it."""

from __future__ import annotations

import importlib
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

from .cuda_checks import probe_torch
from .harness import probe_harness

# Third-party modules reported in the stack (the image is said to have the first six).
STACK_MODULES = ("torch", "torchvision", "onnx", "onnxruntime", "hypothesis", "numpy", "scipy", "matplotlib",
                 "pycocotools", "onnxscript", "pytest", "polygraphy", "tensorrt", "pluggy", "iniconfig",
                 "packaging", "pygments", "xdist", "pytest_benchmark")


def probe(result_path: str, names: list, full: bool) -> int:
    """Runs in a child process (it may hang or crash on a broken CUDA stack). Writes JSON."""
    out: dict = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
                 "machine": platform.machine(), "modules": {}, "find_spec": {}, "harness": {}, "problems": []}

    def save():
        Path(result_path).write_text(json.dumps(out, indent=1, default=str))

    for name in names:  # present without importing (which wheels must be extracted)
        try:
            out["find_spec"][name] = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            out["find_spec"][name] = False
    if full:
        for name in STACK_MODULES:
            start = time.perf_counter()
            try:
                module = importlib.import_module(name)
                version = getattr(module, "__version__", None)
                if version is None:
                    try:
                        import importlib.metadata as md

                        version = md.version({"xdist": "pytest-xdist", "pytest_benchmark": "pytest-benchmark"}
                                             .get(name, name))
                    except Exception:  # noqa: BLE001
                        version = None
                out["modules"][name] = {"ok": True, "version": str(version) if version else None,
                                        "file": getattr(module, "__file__", None),
                                        "seconds": round(time.perf_counter() - start, 2)}
            except BaseException as error:  # noqa: BLE001 - anything: report it
                out["modules"][name] = {"ok": False, "error": f"{type(error).__name__}: {error}"[:300]}
        save()
        out["harness"] = probe_harness()  # before CUDA: a hang there must not hide what is missing
        save()
        try:
            out["torch"] = probe_torch()
        except BaseException as error:  # noqa: BLE001
            out["problems"].append(f"torch probe: {type(error).__name__}: {error}")
        save()
        try:
            import onnxruntime

            out["onnxruntime"] = {"version": onnxruntime.__version__,
                                  "providers": list(onnxruntime.get_available_providers()),
                                  "device": onnxruntime.get_device()}
        except BaseException as error:  # noqa: BLE001
            out["onnxruntime"] = {"error": f"{type(error).__name__}: {error}"}
        save()
    if not full:
        out["harness"] = probe_harness()
    save()
    return 0
