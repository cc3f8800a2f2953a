"""The supported GPU stacks, and the checks that a machine and an environment hold one.

Two stacks, one per CUDA major; their pins live in requirements/gpu-<stack>.txt (the
single source; docs/gpu.md's table is checked against them by tests/test_gpu_stack.py),
every requirement an exact pin, requirements/gpu-common.txt's shared ones included:

  cu12  torch 2.10.0, onnxruntime-gpu 1.26.0, tensorrt-cu12 10.16.1.11   driver >= 525.60.13
  cu13  torch 2.14.1, onnxruntime-gpu 1.31.1, tensorrt-cu13 10.16.1.11   driver >= 580

Both need Python 3.11-3.13 (onnxruntime-gpu 1.26 / 1.31 publish no cp310 wheel and
TensorRT 10.16's bindings no cp314 one). requirements/trt-canary.txt is the cu13 stack
with TensorRT 11 (tensorrt-cu13 11.4.0.106) instead of 10.16; there onnxruntime-gpu's TensorRT provider cannot load
(it links libnvinfer.so.10, TensorRT 11 ships .so.11) and only the trt-* backends run.

Three checks, in the order the nightly runs them:

  driver   nvidia-smi's driver version against the stack's minimum, before anything is
           installed, and what TensorRT's install needs from NVIDIA's index (PyPI's
           TensorRT libraries are stubs that fetch the real wheels from there):
           `python3 deploy_parity/gpu_stack.py driver --stack cu13`
  report   pip's `--dry-run --report` JSON of the stack's requirements: every CUDA
           wheel (nvidia-*, cuda-*, torch, onnxruntime-gpu, tensorrt*) of the stack's
           CUDA major, and no CPU `onnxruntime` in it
  runtime  the installed environment: torch sees the GPU with the stack's CUDA major,
           only onnxruntime-gpu is installed and sessions really open its CUDA provider
           (and its TensorRT provider on the TensorRT 10 stacks), TensorRT imports with
           the pinned major and Polygraphy finds the CUDA runtime:
           `python -m deploy_parity.gpu_stack runtime --stack cu13`

This module imports nothing outside the standard library at import time, and runs by
path (`python3 deploy_parity/gpu_stack.py driver ...`) on a runner with no environment yet.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "requirements"
PYTHONS = ((3, 11), (3, 13))  # inclusive range every stack has wheels for
# The TensorRT major that onnxruntime-gpu's TensorRT provider links (1.26.0 and 1.31.1:
# libonnxruntime_providers_tensorrt.so needs libnvinfer.so.10 and libnvonnxparser.so.10).
ONNXRUNTIME_TENSORRT_MAJOR = 10


@dataclass(frozen=True)
class Stack:
    name: str
    cuda_major: int
    min_driver: str  # nvidia-smi's driver version, as NVIDIA's CUDA compatibility table gives it
    requirements: str  # file under requirements/
    tensorrt_major: int  # the TensorRT major the stack pins
    # Whether onnxruntime-gpu's TensorRT provider can load here: only with TensorRT 10,
    # the libnvinfer.so.10 it links (TensorRT 11 ships libnvinfer.so.11).
    onnxruntime_tensorrt_expected: bool

    def requirements_path(self) -> Path:
        return REQUIREMENTS / self.requirements

    def pins(self) -> dict:
        """name -> exact version of the `==` lines of the stack's own file (not of -r files)."""
        return read_pins(self.requirements_path())

    def all_pins(self) -> dict:
        """name -> exact version of every `==` line the stack installs (-r files included)."""
        pins = {}
        for _, line in requirement_lines(self.requirements_path()):
            pins.update(read_pins_of_lines([line]))
        return pins

    def describe(self) -> str:
        pins = self.pins()
        parts = [f"{name} {pins[name]}" for name in sorted(pins)]
        return f"the CUDA {self.cuda_major} stack '{self.name}' ({', '.join(parts) or 'no pins'})"


STACKS = {
    "cu12": Stack("cu12", 12, "525.60.13", "gpu-cu12.txt", tensorrt_major=10, onnxruntime_tensorrt_expected=True),
    "cu13": Stack("cu13", 13, "580", "gpu-cu13.txt", tensorrt_major=10, onnxruntime_tensorrt_expected=True),
    "trt-canary": Stack("trt-canary", 13, "580", "trt-canary.txt", tensorrt_major=11,
                        onnxruntime_tensorrt_expected=False),
}


def read_pins(path: Path) -> dict:
    return read_pins_of_lines(Path(path).read_text().splitlines())


def read_pins_of_lines(lines: Iterable[str]) -> dict:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9._-]+)(\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
        if match:
            pins[normalize(match.group(1))] = match.group(3)
    return pins


def requirement_lines(path: Path) -> list:
    """(file, line) of every requirement `path` installs, following `-r` includes; pip's options left out."""
    path = Path(path)
    lines = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        include = re.match(r"^(?:-r|--requirement)[\s=]+(\S+)$", line)
        if include:
            lines += requirement_lines(path.parent / include.group(1))
        elif line and not line.startswith("-"):
            lines.append((path, line))
    return lines


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------------------- driver


def version_tuple(text: str) -> tuple:
    numbers = re.findall(r"\d+", text)
    if not numbers:
        raise ValueError(f"no version number in {text!r}")
    return tuple(int(n) for n in numbers)


def driver_versions(run=subprocess.run) -> list:
    """Driver version per visible GPU, from nvidia-smi (raises OSError/RuntimeError with the reason)."""
    try:
        result = run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                     capture_output=True, text=True, timeout=60)
    except FileNotFoundError as exc:
        raise RuntimeError("nvidia-smi not found: no NVIDIA driver is installed on this machine") from exc
    if result.returncode != 0:
        raise RuntimeError(f"nvidia-smi failed ({result.returncode}): {(result.stderr or result.stdout).strip()}")
    versions = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if not versions:
        raise RuntimeError("nvidia-smi lists no GPU")
    return versions


def driver_problem(stack: Stack, driver: str) -> str:
    """Why `driver` cannot run `stack` ("" when it can). Pure."""
    if version_tuple(driver) >= version_tuple(stack.min_driver):
        return ""
    fits = [s for s in STACKS.values() if s.requirements != "trt-canary.txt" and s is not stack
            and version_tuple(driver) >= version_tuple(s.min_driver)]
    other = ""
    if fits:
        other = "; or, with this driver, run " + " / ".join(
            f"the CUDA {s.cuda_major} stack (STACK={s.name}, pip install -r requirements/{s.requirements}, "
            f"tox -e gpu-{s.name})" for s in fits)
    return (f"NVIDIA driver {driver} is older than the {stack.min_driver} that {stack.describe()} needs: "
            f"install NVIDIA driver {stack.min_driver} or newer{other}")


def tensorrt_index_note(stack: Stack, environ: Mapping = os.environ) -> str:
    """One line: where TensorRT's libraries come from at install time, and what a runner that
    cannot reach NVIDIA's index needs instead. Pure: reads the stack's file and `environ`, no network."""
    text = stack.requirements_path().read_text()
    index = re.search(r"^--extra-index-url\s+(\S+)", text, re.M)
    tensorrt = next((name for name in stack.pins() if name.startswith("tensorrt")), "tensorrt")
    note = (f"TensorRT's libraries: PyPI's {tensorrt}-libs is a stub that fetches the real wheel from "
            f"{index.group(1) if index else 'https://pypi.nvidia.com'} at install time; a runner that cannot reach it "
            "needs a local mirror, given with PIP_EXTRA_INDEX_URL (pip takes the real wheel from it) or "
            "WHEEL_STUB_PIP_INDEX_URL (the stub fetches from it)")
    # Named, not shown: an index URL may carry a token, and this line goes to CI logs.
    given = [name for name in ("PIP_EXTRA_INDEX_URL", "WHEEL_STUB_PIP_INDEX_URL") if environ.get(name)]
    return note + (f" (set here: {', '.join(given)})" if given else "")


def python_problem(version=None) -> str:
    version = tuple(version or sys.version_info[:2])
    lo, hi = PYTHONS
    if lo <= version <= hi:
        return ""
    return (f"Python {version[0]}.{version[1]} has no wheels for the pinned GPU stacks: use Python "
            f"{lo[0]}.{lo[1]}-{hi[0]}.{hi[1]} (onnxruntime-gpu 1.26 / 1.31 publish no cp310 wheel, TensorRT 10.16's "
            "bindings no cp314 one; unpinned, pip on 3.10 pairs onnxruntime-gpu 1.23.2, CUDA 12, with torch's CUDA 13 libraries)")


# ------------------------------------------------------------------ pip's report

# Wheels whose own version is the CUDA version (cuda-toolkit 13.0.3, nvidia-cuda-runtime 13.0.96, ...).
TOOLKIT_VERSIONED = {"cuda-toolkit", "cuda-bindings", "cuda-python", "nvidia-nvjitlink", "nvidia-nvtx", "nvidia-cublas",
                     "nvidia-nvvm", "nvidia-nvptxcompiler", "nvidia-nvfatbin", "nvidia-npp", "nvidia-nvjpeg",
                     "nvidia-nvml-dev"}
# CUDA libraries that NVIDIA publishes without a -cuNN suffix only from CUDA 13 on (CUDA 12's are
# nvidia-cufft-cu12 etc.); their own versions (cufft 12.x, curand 10.x) are not CUDA's.
UNSUFFIXED_FROM_13 = {"nvidia-cufft", "nvidia-curand", "nvidia-cusolver", "nvidia-cusparse", "nvidia-cufile"}
# Packages whose CUDA major is that of the CUDA wheels they require.
CUDA_CONSUMERS = ("torch", "onnxruntime-gpu", "tensorrt")
_SUFFIX = re.compile(r"-cu(?:da)?(\d{2})\d*x?(?:-|$)")


def cuda_major_of(name: str, version: str = "") -> Optional[int]:
    """The CUDA major a wheel belongs to, from its name (and version); None if it has none. Pure."""
    name = normalize(name)
    local = re.search(r"\+cu(\d{2})\d*", version or "")
    if local:
        return int(local.group(1))
    suffix = _SUFFIX.search(name)
    if suffix and (name.startswith(("nvidia-", "tensorrt", "cupy", "cuda-")) or name in CUDA_CONSUMERS):
        return int(suffix.group(1))
    if name in TOOLKIT_VERSIONED or name.startswith("nvidia-cuda-"):
        return int(version_tuple(version)[0]) if version else None
    if name in UNSUFFIXED_FROM_13:
        return 13
    return None


_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9._-]+)\s*(?:\[[^\]]*\])?\s*\(?\s*(?:(?:===|==|~=|>=|<=)\s*([0-9][^,;\s)]*))?")


def cuda_major_of_requirement(requirement: str) -> Optional[int]:
    """The CUDA major a Requires-Dist line points at ('nvidia-cuda-runtime-cu12==12.8.90', 'cuda-toolkit[...]==13.0.2')."""
    match = _REQUIREMENT.match(requirement)
    if not match:
        return None
    return cuda_major_of(match.group(1), match.group(2) or "")


def report_majors(report: Mapping) -> dict:
    """name -> (version, CUDA major or None) of everything pip would install. Pure."""
    majors = {}
    for item in report.get("install", []):
        meta = item.get("metadata", {})
        name, version = normalize(meta.get("name", "")), meta.get("version", "")
        major = cuda_major_of(name, version)
        if major is None and (name in CUDA_CONSUMERS or name.startswith("tensorrt")):
            found = {m for m in map(cuda_major_of_requirement, meta.get("requires_dist") or []) if m is not None}
            major = found.pop() if len(found) == 1 else (tuple(sorted(found)) if found else None)
        majors[name] = (version, major)
    return majors


def report_problems(report: Mapping, stack: Stack, extra_names: Iterable[str] = ()) -> list:
    """Why pip's resolution is not `stack` (empty when it is). Pure.

    `extra_names`: names known to be part of the install that the report could not
    resolve (TensorRT's libraries when NVIDIA's index is unreachable); checked by name.
    """
    majors = report_majors(report)
    for name in extra_names:
        majors.setdefault(normalize(name), ("?", cuda_major_of(name)))
    problems = []
    if "onnxruntime" in majors:
        problems.append("the CPU `onnxruntime` is in the install: it would overwrite onnxruntime-gpu's package")
    for needed in ("torch", "onnxruntime-gpu"):
        if needed not in majors:
            problems.append(f"{needed} is not in the install")
    if not any(name.startswith("tensorrt") for name in majors):
        problems.append("no TensorRT wheel in the install")
    wrong = {name: f"{version} (CUDA {major})" for name, (version, major) in sorted(majors.items())
             if major is not None and major != stack.cuda_major}
    if wrong:
        problems.append(f"not CUDA {stack.cuda_major}: " + ", ".join(f"{n} {v}" for n, v in wrong.items()))
    for name in ("torch", "onnxruntime-gpu"):
        if name in majors and majors[name][1] is None:
            problems.append(f"{name} {majors[name][0]} names no CUDA wheel: a CPU build?")
    return problems


def majors_summary(report: Mapping, extra_names: Iterable[str] = ()) -> str:
    majors = report_majors(report)
    for name in extra_names:
        majors.setdefault(normalize(name), ("?", cuda_major_of(name)))
    rows = [f"  {name:34s} {version:14s} CUDA {major}" for name, (version, major) in sorted(majors.items())
            if major is not None]
    return "\n".join(rows)


# ------------------------------------------------------------------------- runtime


def onnxruntime_tensorrt_required(stack: Stack, require_tensorrt: bool = True) -> bool:
    """Whether the runtime check fails when onnxruntime-gpu's TensorRT provider does not open. Pure.

    `require_tensorrt` False (`runtime --no-tensorrt`): TensorRT may be absent altogether.
    """
    return require_tensorrt and stack.onnxruntime_tensorrt_expected


def onnxruntime_tensorrt_note(stack: Stack) -> str:
    """What the runtime check says of the TensorRT provider on a stack where it cannot load. Pure."""
    return (f"not expected on this stack (TensorRT {stack.tensorrt_major} ships libnvinfer.so.{stack.tensorrt_major}; "
            f"onnxruntime-gpu's provider links .so.{ONNXRUNTIME_TENSORRT_MAJOR})")


def runtime_report(stack: Stack, require_tensorrt: bool = True) -> tuple:
    """(facts, problems) of the installed environment. Imports torch, onnxruntime, TensorRT.

    `require_tensorrt` False: TensorRT (and so ONNX Runtime's TensorRT provider) may be absent.
    """
    import importlib.metadata as metadata
    import importlib.util

    facts, problems = {}, []
    facts["python"] = sys.version.split()[0]
    if python_problem():
        problems.append(python_problem())
    try:
        drivers = driver_versions()
        facts["driver"] = drivers[0]
        if driver_problem(stack, drivers[0]):
            problems.append(driver_problem(stack, drivers[0]))
    except RuntimeError as exc:
        problems.append(str(exc))

    import torch

    facts["torch"] = f"{torch.__version__} (CUDA {torch.version.cuda})"
    if torch.version.cuda is None:
        problems.append(f"torch {torch.__version__} is a CPU-only build")
    elif int(torch.version.cuda.split(".")[0]) != stack.cuda_major:
        problems.append(f"torch {torch.__version__} is built for CUDA {torch.version.cuda}, not CUDA {stack.cuda_major}")
    if not torch.cuda.is_available():
        problems.append("torch sees no CUDA device (torch.cuda.is_available() is False)")
    else:
        facts["gpu"] = torch.cuda.get_device_name(0)

    dists = {}
    for dist in ("torch", "torchvision", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-cu12", "tensorrt-cu13",
                 "polygraphy"):
        try:
            dists[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    facts["distributions"] = dists
    ort_pin = stack.pins().get("onnxruntime-gpu", "<pin>")
    if "onnxruntime" in dists:
        beside = (f"next to onnxruntime-gpu {dists['onnxruntime-gpu']}" if "onnxruntime-gpu" in dists
                  else "and onnxruntime-gpu is not")
        problems.append(f"the CPU onnxruntime {dists['onnxruntime']} is installed {beside}: pip uninstall -y onnxruntime "
                        f"&& pip install --force-reinstall --no-deps onnxruntime-gpu=={ort_pin} (both install the "
                        "`onnxruntime` package; install deploy-parity with --no-deps so the CPU one never comes back)")
    elif "onnxruntime-gpu" not in dists:
        problems.append(f"onnxruntime-gpu is not installed: pip install -r {stack.requirements_path().relative_to(REPO)}")
    pins = stack.pins()
    for name, version in pins.items():
        installed = dists.get(name)
        if name in dists and installed != version:
            problems.append(f"{name} {installed} is installed, {stack.name} pins {version}")

    from deploy_parity.backends.onnxruntime.providers import open_provider

    providers = {}
    for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        if provider == "TensorrtExecutionProvider" and not stack.onnxruntime_tensorrt_expected:
            providers[provider] = onnxruntime_tensorrt_note(stack)  # not opened: it cannot load here
            continue
        ok, why = open_provider(provider)
        providers[provider] = "opens" if ok else why
        if not ok and (provider == "CUDAExecutionProvider" or onnxruntime_tensorrt_required(stack, require_tensorrt)):
            problems.append(f"{provider}: {why}")
    facts["onnxruntime providers (opened sessions)"] = providers

    from deploy_parity.backends.tensorrt.libs import expose_cuda_runtime, load_tensorrt_libraries

    try:
        loaded = load_tensorrt_libraries()
        facts["tensorrt"] = loaded
        if loaded.get("version") is None:
            if require_tensorrt:
                problems.append("TensorRT is not installed (import tensorrt fails): the trt-* backends would all skip")
        elif int(loaded["version"].split(".")[0]) != stack.tensorrt_major:
            problems.append(f"TensorRT {loaded['version']} is installed; {stack.name} pins TensorRT {stack.tensorrt_major}")
    except Exception as exc:  # a broken TensorRT is a problem to report, not a crash
        problems.append(f"TensorRT does not load: {exc}")
    facts["cuda runtime dirs given to Polygraphy"] = expose_cuda_runtime()
    if importlib.util.find_spec("polygraphy") is None:
        problems.append("Polygraphy is not installed (pip install polygraphy)")
    else:
        try:
            from polygraphy import cuda

            stream = cuda.Stream()
            stream.synchronize()
            stream.free()
            facts["polygraphy cuda"] = "a stream was created and synchronised"
        except Exception as exc:
            problems.append(f"Polygraphy cannot use the CUDA runtime: {exc}".splitlines()[0])
    return facts, problems


# ----------------------------------------------------------------------------- CLI


def _print_facts(facts: Mapping) -> None:
    for key, value in facts.items():
        print(f"{key}: {json.dumps(value, default=str) if isinstance(value, (dict, list)) else value}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy_parity.gpu_stack", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("driver", "nvidia-smi's driver and this Python against the stack (run first)"),
                       ("report", "pip's --dry-run --report JSON: one CUDA major, no CPU onnxruntime"),
                       ("runtime", "the installed environment (imports torch, onnxruntime, TensorRT)"),
                       ("pins", "print the stack's pinned versions")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--stack", required=True, choices=sorted(STACKS))
        if name == "driver":
            command.add_argument("--driver-version", help="check this version instead of asking nvidia-smi")
        if name == "report":
            command.add_argument("report_json")
        if name == "runtime":
            command.add_argument("--no-tensorrt", action="store_true",
                                 help="TensorRT and ONNX Runtime's TensorRT provider may be absent (never in the "
                                      "nightly: there it fails the run; the provider is never required on trt-canary)")
    args = parser.parse_args(argv)
    stack = STACKS[args.stack]

    if args.command == "pins":
        for name, version in sorted(stack.pins().items()):
            print(f"{name}=={version}")
        return 0
    if args.command == "driver":
        problems = [python_problem()] if python_problem() else []
        try:
            drivers = [args.driver_version] if args.driver_version else driver_versions()
        except RuntimeError as exc:
            drivers, problems = [], problems + [str(exc)]
        problems += [p for p in (driver_problem(stack, d) for d in dict.fromkeys(drivers)) if p]
        print(f"stack: {stack.describe()}; needs NVIDIA driver >= {stack.min_driver}, Python 3.11-3.13")
        print(f"this machine: driver {', '.join(drivers) or 'none'}, Python {sys.version.split()[0]}")
        print(tensorrt_index_note(stack))
    elif args.command == "report":
        report = json.loads(Path(args.report_json).read_text())
        problems = report_problems(report, stack)
        print(f"stack: {stack.describe()}\n{majors_summary(report)}")
    else:
        facts, problems = runtime_report(stack, require_tensorrt=not args.no_tensorrt)
        print(f"stack: {stack.describe()}")
        _print_facts(facts)
    if problems:
        print("\nNOT A SUPPORTED GPU STACK:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):  # run by path: make `deploy_parity` importable for the runtime check
        sys.path.insert(0, str(REPO))
    raise SystemExit(main())
