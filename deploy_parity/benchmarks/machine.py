"""What a run or a measurement ran on: library versions and devices, without importing
GPU libraries.

Versions come from package metadata, so nothing here imports onnxruntime or TensorRT,
and nothing initialises CUDA (which would pin a device before an xdist worker picks
its own). GPU names come from nvidia-smi when it is on PATH.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import socket
import subprocess
from typing import Optional

# Distributions that install each module (CPU and GPU builds install the same module).
_DISTRIBUTIONS = {
    "torch": ("torch",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu12-bindings"),
}


def package_version(module: str) -> Optional[str]:
    """The installed version of `module`, or None if it cannot be found."""
    if importlib.util.find_spec(module) is None:
        return None
    for distribution in _DISTRIBUTIONS.get(module, (module,)):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    # Installed some other way (a wheel from a tarball, a system package): ask the module.
    # TensorRT's bindings import without a GPU; a broken install gives None, not a crash.
    try:
        return str(getattr(importlib.import_module(module), "__version__", None) or "") or None
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return None


def nvidia_smi_query(field: str) -> list:
    """nvidia-smi's `field` (--query-gpu: "name", "index", ...) for every NVIDIA GPU on this
    machine, whatever CUDA_VISIBLE_DEVICES says; [] without nvidia-smi or when it fails."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def gpu_names() -> list:
    """Names of the NVIDIA GPUs on this machine (all of them, whatever CUDA_VISIBLE_DEVICES says)."""
    return nvidia_smi_query("name")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical cores)"


def describe_environment() -> dict:
    gpus = gpu_names()
    cpu = cpu_name()
    if gpus:
        counts = {name: gpus.count(name) for name in dict.fromkeys(gpus)}
        device = ", ".join(f"{n}x {name}" for name, n in counts.items())
    else:
        device = f"cpu: {cpu}"
    return {
        "torch": package_version("torch"),
        "onnxruntime": package_version("onnxruntime"),
        "tensorrt": package_version("tensorrt"),
        "device": device,
        "cpu": cpu,
        "host": socket.gethostname(),
        "python": platform.python_version(),
    }
