#!/usr/bin/env python3
"""One-shot smoke run of the harness on a lent GPU machine, inside a hard time budget.

    python tools/gpu_smoke.py OUT                  # on the GPU machine (repo root, `.whl/` carried)
    python tools/gpu_smoke.py OUT --dry-run        # anywhere: the same phases, tiny, on CPU backends
    python tools/gpu_smoke.py --prepare-wheels .whl   # here, before: wheels the GPU image lacks

The GPU image has Python, torch (CUDA), torchvision, onnx, onnxruntime (CPU build),
hypothesis and numpy, and no network. This script needs only the standard library
itself; all real work runs in child processes, each under a timeout, so a hang or a
crash in one phase never costs the others. Phases, in order:

  stack    Python, torch/CUDA/cuDNN, GPU, driver (nvidia-smi), ONNX Runtime and its
           providers, which optional packages import; a few CUDA sanity checks (TF32
           switch, fp16 conv, torchvision NMS in half). -> stack.json
  deps     what the harness (suites, fixtures, reports, bench) fails to import here. Each
           missing module that a wheel in `.whl/` provides is extracted (wheels are zips)
           into a temporary directory put on PYTHONPATH; nothing is installed.
  parity   pytest suites --backend B --hypothesis-profile ci, one pytest process per
           backend (torch-cuda-fp32, torch-cuda-fp16, torch-cuda-autocast), run side by
           side on the one GPU. -> parity/<backend>/{results.jsonl,junit.xml,pytest.log}
  bench    python -m deploy_parity.bench, one process per (model, backend) pair (a true
           cold start each): CUDA backends first, onnxrt-cpu for comparison while time
           is left. -> bench/bench.json, bench/pairs/*.json
  summary  summary.md / summary.json: test outcomes per model x backend, worst errors per
           model x precision against the tolerance table, latency; rewritten after every
           phase, so a run cut short still leaves what it had.

Without a CUDA device (or with --dry-run) the same phases run on CPU backends with a
tiny budget (torch-cpu, 2 Hypothesis examples, one model) to prove the plumbing.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DEADLINE_S = 450.0  # 7.5 minutes, everything included
DRY_DEADLINE_S = 150.0
CUDA_BACKENDS = ("torch-cuda-fp32", "torch-cuda-fp16", "torch-cuda-autocast")
COMPARISON_BACKEND = "onnxrt-cpu"
DEFAULT_ZOO = ("detr-tiny", "keypoint-rcnn", "mask-rcnn", "mask-rcnn-fixed", "pose-rtmo")  # if the probe fails
DRY_MODEL = "pose-rtmo"
SMOKE_PROFILE = "gpu_smoke"  # registered by a generated pytest plugin (dry run)

# Third-party modules reported in the stack (the image is said to have the first six).
STACK_MODULES = ("torch", "torchvision", "onnx", "onnxruntime", "hypothesis", "numpy", "scipy", "matplotlib",
                 "pycocotools", "onnxscript", "pytest", "polygraphy", "tensorrt", "pluggy", "iniconfig",
                 "packaging", "pygments", "xdist", "pytest_benchmark")
# Distributions --prepare-wheels downloads: pytest and what it imports. scipy or
# matplotlib only when the harness imports them at module level (see _harness_needs).
PYTEST_WHEELS = ("pytest", "pluggy", "iniconfig", "packaging", "pygments")
OPTIONAL_WHEELS = ("scipy", "matplotlib")
WHEEL_LIMIT_MIB = 55.0  # the carried paths travel in 64 MiB together with the tree
# Harness packages whose modules the suites and the bench import (tools/ and tests/ are not needed).
HARNESS_PACKAGES = ("deploy_parity", "models", "fixtures", "reports")
# Training code (pycocotools; scipy in tools/train_*): never imported by the suites or the bench.
HARNESS_SKIP = ("deploy_parity.training", "models.training")


# ============================================================================ small helpers


def _now() -> str:
    return _dt.datetime.now().strftime("%H:%M:%S")


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


def _kill_group(process: subprocess.Popen) -> None:
    """The child and anything it started (it runs in its own session)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()


def _metric(value):
    """A record's metric as a float (NaN/inf are written as strings); None if absent."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.{digits}g}"
    return str(value)


# ============================================================================ child modes


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
        out["harness"] = _probe_harness()  # before CUDA: a hang there must not hide what is missing
        save()
        try:
            out["torch"] = _probe_torch()
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
        out["harness"] = _probe_harness()
    save()
    return 0


def _probe_torch() -> dict:
    import torch

    info = {"version": torch.__version__, "cuda_build": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cuda_available": bool(torch.cuda.is_available()), "threads": torch.get_num_threads(), "checks": {}}
    for label, read in (("cudnn.allow_tf32", lambda: torch.backends.cudnn.allow_tf32),
                        ("cuda.matmul.allow_tf32", lambda: torch.backends.cuda.matmul.allow_tf32),
                        ("cudnn.conv.fp32_precision", lambda: torch.backends.cudnn.conv.fp32_precision),
                        ("cuda.matmul.fp32_precision", lambda: torch.backends.cuda.matmul.fp32_precision)):
        try:
            info.setdefault("tf32_defaults", {})[label] = read()
        except Exception as error:  # noqa: BLE001
            info.setdefault("tf32_defaults", {})[label] = f"{type(error).__name__}: {error}"[:200]
    if not info["cuda_available"]:
        return info
    start = time.perf_counter()
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    info["cuda_init_seconds"] = round(time.perf_counter() - start, 2)
    info["devices"] = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        info["devices"].append({"name": props.name, "capability": f"{props.major}.{props.minor}",
                                "memory_gib": round(props.total_memory / 2**30, 1)})
    checks = info["checks"]

    def check(name, fn):
        try:
            checks[name] = fn()
        except BaseException as error:  # noqa: BLE001
            checks[name] = {"error": f"{type(error).__name__}: {error}"[:400]}

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 96, 128, generator=generator)
    weight = torch.randn(64, 64, 3, 3, generator=generator) * 0.05
    reference = torch.nn.functional.conv2d(x.double(), weight.double(), padding=1)

    def conv_error():
        with torch.inference_mode():
            y = torch.nn.functional.conv2d(x.cuda(), weight.cuda(), padding=1).double().cpu()
        return float((y - reference).abs().max())

    def tf32_switch():
        sys.path.insert(0, str(REPO))
        from deploy_parity.backends.pytorch.runner import ieee_fp32

        default_error = conv_error()
        with ieee_fp32(torch):
            ieee_error = conv_error()
            try:
                legacy = torch.backends.cudnn.allow_tf32  # must not raise inside ieee_fp32
            except Exception as error:  # noqa: BLE001
                legacy = f"RAISES {type(error).__name__}: {str(error)[:160]}"
        return {"conv_max_err_default": default_error, "conv_max_err_ieee_fp32": ieee_error,
                "legacy_allow_tf32_read_inside": legacy,
                "note": "TF32 in the default if its error is ~1e-3 and the ieee one ~1e-6"}

    def half_conv():
        with torch.inference_mode():
            y = torch.nn.functional.conv2d(x.cuda().half(), weight.cuda().half(), padding=1).double().cpu()
        return {"conv_fp16_max_err": float((y - reference).abs().max())}

    def autocast_conv():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            y = torch.nn.functional.conv2d(x.cuda(), weight.cuda(), padding=1)
        return {"dtype": str(y.dtype), "max_err": float((y.double().cpu() - reference).abs().max())}

    def nms_half():
        import torchvision

        boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float16, device="cuda")
        scores = torch.tensor([0.9, 0.8, 0.7], dtype=torch.float16, device="cuda")
        return {"kept": torchvision.ops.nms(boxes, scores, 0.5).tolist()}

    def full_like_half_min():  # the keypoint decoding fills fp16 maps with float32's min
        maps = torch.zeros(2, device="cuda", dtype=torch.float16)
        return {"value": float(torch.full_like(maps, torch.finfo(torch.float32).min)[0])}

    check("tf32_switch", tf32_switch)
    check("fp16_conv", half_conv)
    check("autocast_conv", autocast_conv)
    check("torchvision_nms_fp16", nms_half)
    check("full_like_fp16_with_fp32_min", full_like_half_min)
    return info


def _probe_harness() -> dict:
    """Import every harness module the suites and the bench use; list the model zoo."""
    import pkgutil

    sys.path.insert(0, str(REPO))
    result = {"missing": {}, "errors": {}, "imported": 0}
    names = ["pytest", "hypothesis", "conftest", "deploy_parity.bench"]
    for package in HARNESS_PACKAGES:
        names.append(package)
        try:
            root = REPO / package
            for info in pkgutil.walk_packages([str(root)], prefix=f"{package}."):
                if not info.name.startswith(HARNESS_SKIP):
                    names.append(info.name)
        except Exception as error:  # noqa: BLE001
            result["errors"][package] = f"{type(error).__name__}: {error}"
    for name in names:
        try:
            importlib.import_module(name)
            result["imported"] += 1
        except ModuleNotFoundError as error:
            missing = (error.name or str(error)).split(".")[0]
            result["missing"].setdefault(missing, []).append(name)
        except BaseException as error:  # noqa: BLE001
            result["errors"][name] = f"{type(error).__name__}: {error}"[:400]
    try:
        from deploy_parity.backends import BACKENDS
        from deploy_parity.registry import build_registry

        registry = build_registry([])
        result["models"] = [{"name": n, "default": bool(registry.get(n).default)} for n in registry.names()]
        result["default_models"] = [c.name for c in registry.select([])]
        result["backends"] = {name: backend.unavailable() for name, backend in BACKENDS.items()}
    except BaseException as error:  # noqa: BLE001
        result["errors"]["registry"] = f"{type(error).__name__}: {error}"[:400]
    return result


# ============================================================================ wheels


def _wheel_tags(path: Path):
    parts = path.name[:-len(".whl")].split("-")
    if len(parts) < 5:
        return None
    return parts[0], parts[1], parts[-3].split("."), parts[-2].split("."), parts[-1].split(".")


def wheel_compatible(path: Path, version=sys.version_info, machine: str = platform.machine()) -> bool:
    tags = _wheel_tags(path)
    if tags is None:
        return False
    _, _, pys, abis, plats = tags
    cp = f"cp{version[0]}{version[1]}"
    py_ok = any(t in ("py3", f"py{version[0]}{version[1]}", cp) for t in pys)
    if not py_ok and "abi3" in abis:  # cp3X-abi3 runs on every later CPython 3
        py_ok = any(t.startswith("cp3") and t[2:].isdigit() and int(t[3:] or 0) <= version[1] for t in pys)
    abi_ok = any(a in ("none", "abi3", cp) for a in abis)
    plat_ok = any(p == "any" or (sys.platform.startswith("linux") and "linux" in p and p.endswith(machine))
                  for p in plats)
    return py_ok and abi_ok and plat_ok


def wheel_top_level(path: Path) -> list:
    """Top-level importable names in a wheel (packages, modules, extension modules)."""
    names = set()
    with zipfile.ZipFile(path) as archive:
        for entry in archive.namelist():
            first = entry.split("/", 1)[0]
            if first.endswith((".dist-info", ".data")) or first.endswith(".libs"):
                continue
            if "/" in entry:
                names.add(first)
            elif entry.endswith(".py"):
                names.add(entry[:-3])
            elif entry.endswith((".so", ".pyd")):
                names.add(entry.split(".", 1)[0])
    return sorted(n for n in names if n.isidentifier())


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_requires(path: Path) -> list:
    """Distribution names a wheel requires (Requires-Dist without an `extra` marker)."""
    with zipfile.ZipFile(path) as archive:
        metadata = next((n for n in archive.namelist() if n.endswith(".dist-info/METADATA")), None)
        text = archive.read(metadata).decode("utf-8", "replace") if metadata else ""
    names = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            if not line.strip():
                break  # the headers end at the first blank line
            continue
        requirement, _, marker = line[len("Requires-Dist:"):].partition(";")
        if "extra" in marker:
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if match:
            names.append(_normalise(match.group(1)))
    return names


def wheels_to_extract(missing, wheels: list, present) -> list:
    """The wheels providing the `missing` modules, plus, transitively, the wheels they
    require that are among `wheels` and whose modules are not `present` (a predicate on
    a module name). Requirements met by the environment, or by no wheel here, are left."""
    by_dist = {_normalise(w.name.split("-")[0]): (w, tops) for w, tops in wheels}
    queue = [(w, tops) for w, tops in wheels if set(tops) & set(missing)]
    chosen: dict = {}
    while queue:
        wheel, tops = queue.pop()
        if wheel.name in chosen:
            continue
        chosen[wheel.name] = (wheel, tops)
        for dist in wheel_requires(wheel):
            if dist in by_dist:
                dep, dep_tops = by_dist[dist]
                if dep_tops and not all(present(t) for t in dep_tops):
                    queue.append((dep, dep_tops))
    return sorted(chosen.values(), key=lambda item: item[0].name)


def _harness_needs() -> dict:
    """Which of OPTIONAL_WHEELS the harness imports at module level (so must be importable)."""
    import ast

    needs: dict = {}
    files = [REPO / "conftest.py"]
    for package in HARNESS_PACKAGES + ("suites",):
        files += sorted((REPO / package).rglob("*.py"))
    for file in files:
        relative = file.relative_to(REPO).as_posix()
        if relative.startswith(tuple(skip.replace(".", "/") + "/" for skip in HARNESS_SKIP)):
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (SyntaxError, OSError, UnicodeDecodeError):
            continue
        for node in tree.body:  # module level only: lazy imports inside functions do not count
            modules = []
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules = [node.module]
            for module in modules:
                top = module.split(".")[0]
                if top in OPTIONAL_WHEELS:
                    needs.setdefault(top, []).append(relative)
    return needs


def prepare_wheels(directory: str, python_version: str, extra: list, pip: list) -> int:
    """Download (no deps, binary only, manylinux x86_64) what the GPU image lacks."""
    import importlib.metadata as md

    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    needs = _harness_needs()
    packages = list(PYTEST_WHEELS) + [p for p in OPTIONAL_WHEELS if p in needs] + list(extra)
    for name in OPTIONAL_WHEELS:
        if name in needs:
            print(f"{name}: imported at module level by {', '.join(needs[name][:3])}: included")
        elif name not in extra:
            print(f"{name}: not imported at module level by the harness: left out")
    specs = []
    for name in dict.fromkeys(packages):
        try:
            specs.append(f"{name}=={md.version(name)}")  # the version tested here
        except md.PackageNotFoundError:
            specs.append(name)
    command = [*pip, "download", "--only-binary=:all:", "--python-version", python_version,
               "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
               "--platform", "manylinux_2_28_x86_64", "--no-deps", "-d", str(target), *specs]
    print("$ " + " ".join(command), flush=True)
    done = subprocess.run(command)
    if done.returncode != 0:
        print(f"pip download failed (exit {done.returncode})", file=sys.stderr)
        return done.returncode
    wanted = {re.sub(r"[-_.]+", "_", s.split("==")[0]).lower() for s in specs}
    version = tuple(int(v) for v in python_version.split(".")[:2])
    total = 0
    for wheel in sorted(target.glob("*.whl")):
        size = wheel.stat().st_size
        total += size
        dist = re.sub(r"[-_.]+", "_", wheel.name.split("-")[0]).lower()
        note = "" if dist in wanted else "   (not asked for this time: delete it if unneeded)"
        if not wheel_compatible(wheel, version=version, machine="x86_64"):
            note += f"   (NOT installable on CPython {python_version} x86_64 Linux)"
        print(f"{size / 2**20:8.2f} MiB  {wheel.name}{note}")
    print(f"{total / 2**20:8.2f} MiB  total in {target}")
    if total / 2**20 > WHEEL_LIMIT_MIB:
        print(f"too large: the carried paths travel in 64 MiB with the tree; keep {target} under "
              f"{WHEEL_LIMIT_MIB:.0f} MiB", file=sys.stderr)
        return 1
    return 0


# ============================================================================ the run


class Smoke:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.deadline = self.started + args.deadline
        self.log_file = open(self.out / "progress.log", "a", encoding="utf-8", buffering=1)
        self.work = Path(tempfile.mkdtemp(prefix="gpu_smoke_"))  # extracted wheels, export caches
        self.site = None  # extracted wheels, once any
        self.children: set = set()  # running child processes (each in its own session)
        self.summary: dict = {
            "started_at": _dt.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join([sys.executable] + sys.argv),
            "deadline_seconds": args.deadline, "mode": None, "phases": {}, "notes": [], "problems": [],
            "stack": None, "deps": None, "parity": None, "bench": None,
        }

    # ---------------------------------------------------------------- plumbing

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, message: str) -> None:
        line = f"[{_now()} +{time.monotonic() - self.started:6.1f}s] {message}"
        print(line, flush=True)
        self.log_file.write(line + "\n")

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTEST_", "HYPOTHESIS_")) and k not in ("PYTHONPATH",)}
        paths = [str(REPO)] + ([str(self.site)] if self.site else []) + [str(self.work / "plugin")]
        if os.environ.get("PYTHONPATH"):
            paths.append(os.environ["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        env["MPLBACKEND"] = "Agg"
        if self.args.torch_threads:
            env["PARITY_TORCH_THREADS"] = str(self.args.torch_threads)
        return env

    def run_child(self, command: list, timeout: float, log_path: Path) -> dict:
        """One child process under a timeout; stdout+stderr to log_path. Never raises on failure."""
        timeout = max(1.0, timeout)
        start = time.monotonic()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w", encoding="utf-8") as handle:
            handle.write("$ " + " ".join(command) + "\n")
            handle.flush()
            process = subprocess.Popen(command, cwd=REPO, env=self.env(), stdout=handle, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            self.children.add(process)
            try:
                rc = process.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                _kill_group(process)
                rc, timed_out = process.returncode, True
            finally:
                self.children.discard(process)
        seconds = time.monotonic() - start
        if timed_out:
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(f"\n[gpu_smoke] killed after {seconds:.1f}s (timeout {timeout:.0f}s)\n")
        return {"rc": rc, "timed_out": timed_out, "seconds": round(seconds, 1), "log": str(log_path)}

    def kill_children(self) -> None:
        for process in list(self.children):
            _kill_group(process)
            self.children.discard(process)

    def on_signal(self, number, frame) -> None:
        """Killed from outside (the device tool's own limit): stop the children, keep what we have."""
        self.log(f"signal {number}: stopping the children and writing what there is")
        self.kill_children()
        self.summary["problems"].append(f"stopped by signal {number} after {time.monotonic() - self.started:.0f}s")
        try:
            if self.summary.get("parity"):
                self.summarise_parity()  # the records written so far (JSON lines are flushed per case)
            if self.summary.get("bench"):
                self.write_bench()
        except Exception as error:  # noqa: BLE001
            self.summary["problems"].append(f"partial summary: {type(error).__name__}: {error}")
        self.write_summary()
        shutil.rmtree(self.work, ignore_errors=True)
        os._exit(128 + number)

    def phase(self, name: str, fn, *args) -> None:
        self.log(f"phase {name}: start ({self.remaining():.0f}s left)")
        start = time.monotonic()
        status = "ok"
        try:
            fn(*args)
        except Exception as error:  # noqa: BLE001 - a broken phase must not lose the others
            status = f"error: {type(error).__name__}: {error}"
            self.summary["problems"].append(f"phase {name} crashed: {traceback.format_exc(limit=6)}")
            self.log(f"phase {name}: CRASHED {type(error).__name__}: {error}")
        finally:
            self.kill_children()
        self.summary["phases"][name] = {"status": status, "seconds": round(time.monotonic() - start, 1)}
        self.log(f"phase {name}: {status} in {time.monotonic() - start:.1f}s")
        self.write_summary()

    # ---------------------------------------------------------------- phases

    def run_probe(self, full: bool, names: list, label: str, timeout: float) -> dict:
        path = self.work / f"probe-{label}.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--probe", str(path)]
        command += ["--full"] if full else []
        command += [a for n in names for a in ("--name", n)]
        done = self.run_child(command, timeout, self.out / "logs" / f"probe-{label}.log")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {"problems": []}
        data["child"] = done
        if done["rc"] != 0 or done["timed_out"]:
            data.setdefault("problems", []).append(f"probe {label}: exit {done['rc']}, timed out {done['timed_out']}:"
                                                   f" {_tail(Path(done['log']).read_text(), 8)}")
        return data

    def stack_phase(self) -> None:
        wheels = self.wheels()
        names = sorted({n for _, tops in wheels for n in tops})
        data = self.run_probe(True, names, "stack", min(self.args.probe_timeout, self.remaining() - 30))
        data["nvidia_smi"] = self.nvidia_smi()
        data["wheels_dir"] = {"path": str(self.wheels_dir()), "wheels": [w.name for w, _ in wheels]}
        self.summary["stack"] = data
        _write_json(self.out / "stack.json", data)
        torch_info = data.get("torch") or {}
        mods = data.get("modules", {})
        self.log(f"python {data.get('python')} | torch {torch_info.get('version')} cuda {torch_info.get('cuda_build')} "
                 f"available={torch_info.get('cuda_available')} | "
                 f"gpu {[d['name'] for d in torch_info.get('devices', [])]} | "
                 f"driver {data['nvidia_smi'].get('driver')} | onnxruntime "
                 f"{(data.get('onnxruntime') or {}).get('version')} {(data.get('onnxruntime') or {}).get('providers')}")
        self.log("imports: " + ", ".join(f"{n}={'ok' if m.get('ok') else 'MISSING'}" for n, m in mods.items()))
        for name, value in (torch_info.get("checks") or {}).items():
            self.log(f"cuda check {name}: {json.dumps(value, default=str)[:300]}")
        for problem in data.get("problems", []):
            self.summary["problems"].append(problem)

    def nvidia_smi(self) -> dict:
        if shutil.which("nvidia-smi") is None:
            return {"available": False}
        result = {"available": True}
        try:
            done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                                   "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            result["query"] = done.stdout.strip() or done.stderr.strip()
            first = (done.stdout.strip().splitlines() or [""])[0].split(",")
            if len(first) > 1:
                result["driver"] = first[1].strip()
            head = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20)
            match = re.search(r"CUDA Version:\s*([\d.]+)", head.stdout)
            result["cuda_driver_api"] = match.group(1) if match else None
        except (OSError, subprocess.TimeoutExpired) as error:
            result["error"] = str(error)
        return result

    def wheels_dir(self) -> Path:
        return (REPO / self.args.wheels) if not Path(self.args.wheels).is_absolute() else Path(self.args.wheels)

    def wheels(self) -> list:
        """[(wheel, top-level names)] for the wheels in the wheels dir this interpreter can use."""
        found = []
        for wheel in sorted(self.wheels_dir().glob("*.whl")) if self.wheels_dir().is_dir() else []:
            if wheel_compatible(wheel):
                try:
                    found.append((wheel, wheel_top_level(wheel)))
                except (zipfile.BadZipFile, OSError) as error:
                    self.summary["problems"].append(f"wheel {wheel.name} unreadable: {error}")
        return found

    def deps_phase(self) -> None:
        stack = self.summary["stack"] or {}
        harness = stack.get("harness", {})
        deps = {"missing_in_image": sorted(harness.get("missing", {})), "missing_detail": harness.get("missing", {}),
                "import_errors": harness.get("errors", {}), "extracted": [], "site": None}
        self.summary["deps"] = deps
        present = stack.get("find_spec", {})
        missing = set(harness.get("missing", {}))
        if not harness:  # the probe died before it got there: assume the usual suspects
            missing = {name for name in ("pytest", "scipy") if present.get(name) is False}
            self.summary["problems"].append(f"harness import probe gave nothing; assuming missing: {sorted(missing)}")
        if missing:
            # The wheels that provide what is missing, and the wheels those require that
            # are here and whose modules the image lacks (pytest -> pluggy, iniconfig, ...).
            wheels = self.wheels()
            chosen = wheels_to_extract(missing, wheels, lambda name: bool(present.get(name)))
            uncovered = sorted(m for m in missing if not any(m in tops for _, tops in chosen))
            if chosen:
                self.site = self.work / "site"
                for wheel, tops in chosen:
                    with zipfile.ZipFile(wheel) as archive:
                        archive.extractall(self.site)
                    deps["extracted"].append({"wheel": wheel.name, "modules": tops})
                    self.log(f"deps: extracted {wheel.name} ({', '.join(tops)})")
                deps["site"] = str(self.site)
            if uncovered:
                note = (f"missing in the image and in {self.wheels_dir()}: {', '.join(uncovered)} "
                        f"(python tools/gpu_smoke.py --prepare-wheels .whl, then carry .whl)")
                self.summary["problems"].append(note)
                self.log("deps: " + note)
            if chosen:
                again = self.run_probe(False, [], "after-wheels", min(self.args.probe_timeout, self.remaining() - 30))
                deps["after_fallback"] = {"missing": again.get("harness", {}).get("missing", {}),
                                          "errors": again.get("harness", {}).get("errors", {})}
                for key in ("models", "default_models", "backends"):
                    if key in again.get("harness", {}):
                        harness[key] = again["harness"][key]
                self.log(f"deps: after extracting, still missing {sorted(deps['after_fallback']['missing']) or 'nothing'}"
                         + (f"; import errors {deps['after_fallback']['errors']}" if deps['after_fallback']['errors'] else ""))
        else:
            self.log("deps: the harness imports everything it needs from the image; no wheels extracted")
        mods = stack.get("modules", {})
        matplotlib_ok = mods.get("matplotlib", {}).get("ok", False) or any(
            "matplotlib" in e["modules"] for e in deps["extracted"])
        deps["html_report"] = bool(matplotlib_ok)
        if not matplotlib_ok:
            self.summary["notes"].append("matplotlib absent: parity runs with --no-html-report (run.json, results.jsonl "
                                         "and the terminal summary are still written; no plots or case pictures)")
        for name in ("pycocotools", "onnxscript", "polygraphy"):
            if mods and not mods.get(name, {}).get("ok"):
                self.summary["notes"].append(f"{name} absent: not needed by the suites or the bench "
                                             "(training / dynamo exporter / TensorRT only)")
        # The zoo, as `pytest suites --list-models` would list it (same registry).
        self.models = list(harness.get("default_models") or DEFAULT_ZOO)
        deps["default_models"] = self.models
        deps["backends"] = harness.get("backends")
        if not harness.get("default_models"):
            self.summary["problems"].append(f"registry probe failed ({harness.get('errors', {}).get('registry')}); "
                                            f"using the built-in list {list(DEFAULT_ZOO)}")
        _write_json(self.out / "deps.json", deps)

    def plan(self) -> None:
        torch_info = (self.summary["stack"] or {}).get("torch") or {}
        cuda = bool(torch_info.get("cuda_available"))
        dry = self.args.dry_run or not (cuda or self.args.rehearse)
        if not self.args.dry_run and not cuda and not self.args.rehearse:
            self.summary["notes"].append("no CUDA device visible to torch: ran the DRY RUN (CPU backends) instead")
            self.log("no CUDA device: switching to the dry run (CPU backends, tiny budget)")
        self.dry = dry
        self.summary["mode"] = "dry-run" if dry else ("gpu" if cuda else "rehearsal (GPU plan, no CUDA)")
        models = getattr(self, "models", list(DEFAULT_ZOO))
        if self.args.models:
            models = [m for v in self.args.models for m in v.split(",") if m]
        elif dry:
            models = [DRY_MODEL]
        self.models = models
        if dry:
            self.parity_backends = self._split(self.args.backends) or ["torch-cpu"]
            self.bench_backends = self._split(self.args.bench_backends) or ["torch-cpu"]
            self.comparison_backends = [] if self.args.no_comparison else [COMPARISON_BACKEND]
            self.profile = self.args.profile or SMOKE_PROFILE
            self.bench_args = ["--warmup", "1", "--runs", "5", "--throughput-runs", "2", "--batches", "1,2"]
        else:
            self.parity_backends = self._split(self.args.backends) or list(CUDA_BACKENDS)
            self.bench_backends = self._split(self.args.bench_backends) or list(CUDA_BACKENDS)
            self.comparison_backends = [] if self.args.no_comparison else [COMPARISON_BACKEND]
            self.profile = self.args.profile or "ci"
            self.bench_args = ["--warmup", "5", "--runs", "30", "--throughput-runs", "5", "--batches", "1,2,4,8"]
        self.summary["plan"] = {"models": self.models, "parity_backends": self.parity_backends,
                                "bench_backends": self.bench_backends + self.comparison_backends,
                                "hypothesis_profile": self.profile, "bench_args": self.bench_args}
        self.log(f"plan: {self.summary['mode']}; models {self.models}; parity {self.parity_backends} "
                 f"(profile {self.profile}); bench {self.bench_backends} + {self.comparison_backends}")

    @staticmethod
    def _split(values) -> list:
        return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]

    def write_profile_plugin(self) -> None:
        plugin = self.work / "plugin"
        plugin.mkdir(parents=True, exist_ok=True)
        (plugin / "gpu_smoke_profile.py").write_text(
            "from hypothesis import HealthCheck, settings\n"
            f"settings.register_profile({SMOKE_PROFILE!r}, max_examples={self.args.dry_examples}, deadline=None,\n"
            "                          derandomize=True, database=None, print_blob=True,\n"
            "                          suppress_health_check=list(HealthCheck))\n")

    def parity_phase(self) -> None:
        self.write_profile_plugin()
        html = (self.summary.get("deps") or {}).get("html_report", False)
        bench_reserve = self.args.bench_reserve if not self.dry else 25
        budget = min(self.args.parity_timeout, self.remaining() - bench_reserve - 10)
        phase_deadline = time.monotonic() + max(budget, 20)
        runs = {}
        self.summary["parity"] = {"runs": runs, "profile": self.profile}
        pending = list(self.parity_backends)
        active: dict = {}
        while pending or active:
            while pending and len(active) < max(1, self.args.parity_jobs):
                backend = pending.pop(0)
                directory = self.out / "parity" / backend
                directory.mkdir(parents=True, exist_ok=True)
                command = [sys.executable, "-m", "pytest", "suites", "--backend", backend,
                           "--hypothesis-profile", self.profile, "--reports-dir", str(directory),
                           "-p", "no:cacheprovider", "--junitxml", str(directory / "junit.xml"),
                           "--history-db", "off", "--report-images", "0",
                           "--parity-cache-dir", str(self.work / f"cache-{backend}"), "-v"]
                if self.profile == SMOKE_PROFILE:
                    command[3:3] = ["-p", "gpu_smoke_profile"]
                if not html:
                    command.append("--no-html-report")
                if self.dry or self.args.models:
                    command += ["--model", ",".join(self.models)]
                log = directory / "pytest.log"
                handle = open(log, "w", encoding="utf-8")
                handle.write("$ " + " ".join(command) + "\n")
                handle.flush()
                process = subprocess.Popen(command, cwd=REPO, env=self.env(), stdout=handle, stderr=subprocess.STDOUT,
                                           start_new_session=True)
                self.children.add(process)
                active[backend] = (process, handle, time.monotonic(), command)
                self.log(f"parity: {backend} started (pid {process.pid}, until +"
                         f"{phase_deadline - self.started:.0f}s)")
            time.sleep(0.5)
            for backend, (process, handle, start, command) in list(active.items()):
                rc = process.poll()
                timed_out = False
                if rc is None and time.monotonic() > phase_deadline:
                    _kill_group(process)
                    rc, timed_out = process.returncode, True
                    handle.write(f"\n[gpu_smoke] killed at the parity phase deadline "
                                 f"({time.monotonic() - start:.0f}s)\n")
                if rc is None:
                    continue
                handle.close()
                del active[backend]
                self.children.discard(process)
                directory = self.out / "parity" / backend
                runs[backend] = {"rc": rc, "timed_out": timed_out, "seconds": round(time.monotonic() - start, 1),
                                 "command": " ".join(command), "dir": str(directory)}
                records = _read_jsonl(directory / "results.jsonl")
                tests = _read_junit(directory / "junit.xml")
                if not tests:  # killed before pytest wrote its XML: the -v lines say what finished
                    tests, running = _read_log_outcomes(directory / "pytest.log")
                    if running:
                        runs[backend]["running_when_stopped"] = running
                runs[backend]["records"] = len(records)
                runs[backend]["tests"] = _count(t["outcome"] for t in tests)
                if rc not in (0, 1) or timed_out or (rc != 0 and not tests):
                    runs[backend]["log_tail"] = _tail((directory / "pytest.log").read_text(errors="replace"), 12)
                    if not tests:
                        self.summary["problems"].append(f"parity {backend}: no test results (exit {rc}): "
                                                        + _tail(runs[backend]["log_tail"], 3))
                self.log(f"parity: {backend} {'TIMED OUT' if timed_out else f'exit {rc}'} in "
                         f"{runs[backend]['seconds']}s; {len(records)} records; tests {runs[backend]['tests']}")
                self.summarise_parity()
                self.write_summary()
        self.summarise_parity()

    def summarise_parity(self) -> None:
        parity = self.summary["parity"]
        records, tests = [], []
        for backend in self.parity_backends:  # finished or not: whatever each has written
            directory = self.out / "parity" / backend
            records += _read_jsonl(directory / "results.jsonl")
            tests += _read_junit(directory / "junit.xml") or _read_log_outcomes(directory / "pytest.log")[0]
        parity["tests"] = tests_by_model_backend(tests, parity["runs"])
        parity["errors"] = worst_by_model_precision(records)

    def bench_phase(self) -> None:
        pairs_dir = self.out / "bench" / "pairs"
        pairs_dir.mkdir(parents=True, exist_ok=True)
        bench = {"pairs": [], "skipped": []}
        self.summary["bench"] = bench
        plan = [(m, b) for b in self.bench_backends for m in self.models]
        plan += [(m, b) for b in self.comparison_backends for m in self.models]
        reserve = 8
        for model, backend in plan:
            left = self.remaining() - reserve
            comparison = backend in self.comparison_backends
            if left < (self.args.min_pair_seconds * (2 if comparison else 1)):
                bench["skipped"].append(f"{model}@{backend}: {left:.0f}s left")
                continue
            output = pairs_dir / f"{model}@{backend}.json"
            command = [sys.executable, "-m", "deploy_parity.bench", "--model", model, "--backend", backend,
                       "--in-process", "--fresh", "--output", str(output),
                       "--cache-dir", str(self.work / "cache-bench"), *self.bench_args]
            done = self.run_child(command, min(self.args.pair_timeout, left), pairs_dir / f"{model}@{backend}.log")
            entry = {"model": model, "backend": backend, **done}
            try:
                results = json.loads(output.read_text())["results"]
            except (OSError, ValueError, KeyError):
                results = [{"model": model, "backend": backend, "precision": None,
                            "error": ("timed out" if done["timed_out"] else f"exit {done['rc']}") + ": " +
                                     (_tail(Path(done["log"]).read_text(errors="replace"), 1) or "no output")}]
            entry["results"] = results
            bench["pairs"].append(entry)
            first = results[0] if results else {}
            if first.get("error"):
                self.log(f"bench: {model}@{backend}: {first['error'][:200]} ({done['seconds']}s)")
            else:
                self.log(f"bench: {model}@{backend}: warm median {first['warm']['median_ms']:.2f} ms, cold first "
                         f"infer {first['cold']['first_infer_seconds'] * 1000:.1f} ms ({done['seconds']}s)")
            self.write_bench()
            self.write_summary()
        if bench["skipped"]:
            self.log(f"bench: skipped for lack of time: {', '.join(bench['skipped'])}")
        self.write_bench()

    def write_bench(self) -> None:
        bench = self.summary["bench"]
        results = [r for pair in bench["pairs"] for r in pair["results"]]
        host, settings = None, None
        for pair in bench["pairs"]:
            try:
                document = json.loads((self.out / "bench" / "pairs" / f"{pair['model']}@{pair['backend']}.json")
                                      .read_text())
                host, settings = document.get("host"), document.get("settings")
                break
            except (OSError, ValueError):
                continue
        _write_json(self.out / "bench" / "bench.json", {
            "created_at": _dt.datetime.now().isoformat(timespec="seconds"), "host": host,
            "settings": {**(settings or {}), "isolated": True, "note": "one process per (model, backend)"},
            "results": results})

    # ---------------------------------------------------------------- summary

    def write_summary(self) -> None:
        self.summary["elapsed_seconds"] = round(time.monotonic() - self.started, 1)
        try:
            _write_json(self.out / "summary.json", self.summary)
            (self.out / "summary.md").write_text(render_markdown(self.summary))
        except Exception as error:  # noqa: BLE001
            self.log(f"summary not written: {type(error).__name__}: {error}")

    def run(self) -> int:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, self.on_signal)
        self.log(f"gpu_smoke: output {self.out}; deadline {self.args.deadline:.0f}s; repo {REPO}")
        self.phase("stack", self.stack_phase)
        self.phase("deps", self.deps_phase)
        self.plan()
        self.phase("parity", self.parity_phase)
        self.phase("bench", self.bench_phase)
        self.write_summary()
        self.log(f"done in {time.monotonic() - self.started:.0f}s: {self.out / 'summary.md'}")
        print(render_markdown(self.summary, brief=True), flush=True)
        shutil.rmtree(self.work, ignore_errors=True)
        parity = self.summary.get("parity") or {}
        return 0 if parity.get("runs") and all(not r["timed_out"] and r["rc"] in (0, 1) and r.get("tests")
                                                for r in parity["runs"].values()) else 1


# ============================================================================ readers and tables


def _read_jsonl(path: Path) -> list:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut short by a kill
                continue
    return records


_TEST_ID = re.compile(r"^(?P<test>[^\[]+)\[(?P<model>[^@\]]+)@(?P<backend>[^\]]+)\]$")


def _read_junit(path: Path) -> list:
    if not path.is_file():
        return []
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return []
    tests = []
    for case in root.iter("testcase"):
        match = _TEST_ID.match(case.get("name", ""))
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (child.get("message") or child.text or "").strip().splitlines()[:1]
                message = message[0][:300] if message else ""
                break
        tests.append({"test": match["test"] if match else case.get("name"),
                      "model": match["model"] if match else None, "backend": match["backend"] if match else None,
                      "outcome": outcome, "message": message, "seconds": float(case.get("time") or 0)})
    return tests


_LOG_LINE = re.compile(r"::(?P<name>test_\w+\[[^\]]+\])(?:\s+(?P<outcome>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b"
                       r"(?P<rest>.*))?$")


def _read_log_outcomes(path: Path) -> tuple:
    """Per-test outcomes from `pytest -v` output (when no JUnit XML was written), and the
    test that had started but not finished."""
    if not path.is_file():
        return [], None
    tests, running = [], None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _LOG_LINE.search(line.strip())
        if not match:
            continue
        if not match["outcome"]:
            running = match["name"]
            continue
        running = None
        case = _TEST_ID.match(match["name"])
        outcome = {"PASSED": "passed", "FAILED": "failed", "ERROR": "error", "SKIPPED": "skipped"}.get(
            match["outcome"], "passed")
        tests.append({"test": case["test"] if case else match["name"], "model": case["model"] if case else None,
                      "backend": case["backend"] if case else None, "outcome": outcome,
                      "message": (match["rest"] or "").strip()[:300], "seconds": None, "source": "log"})
    return tests, running


def _count(values) -> dict:
    counts: dict = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def tests_by_model_backend(tests: list, runs: dict) -> list:
    rows: dict = {}
    for test in tests:
        if test["model"] is None:
            continue
        row = rows.setdefault((test["model"], test["backend"]), {
            "model": test["model"], "backend": test["backend"], "passed": 0, "failed": 0, "error": 0,
            "skipped": 0, "problems": []})
        row[test["outcome"]] += 1
        if test["outcome"] in ("failed", "error"):
            row["problems"].append(f"{test['test']}: {test['message']}")
    for row in rows.values():
        run = runs.get(row["backend"], {})
        row["status"] = ("ERROR" if row["error"] else "FAIL" if row["failed"] else
                         "skipped" if not row["passed"] else "pass")
        if run.get("timed_out"):
            row["status"] += " (run timed out)"
    return sorted(rows.values(), key=lambda r: (r["model"], r["backend"]))


# (output kind, metric in the comparison, tolerance field, "max" or "min")
ERROR_COLUMNS = (
    ("keypoints", "max_px", "pixel", "max", "worst kpt px"),
    ("boxes", "max_corner_px", "corner_px", "max", "worst box corner px"),
    ("boxes", "max_score_abs", "score_abs", "max", "worst box score diff"),
    ("keypoints", "max_score_abs", "score_abs", "max", "worst kpt score diff"),
    ("boxes", "min_iou", "min_iou", "min", "min box IoU"),
    ("masks", "min_iou", "min_iou", "min", "min mask IoU"),
    ("tensor", "max_abs", "atol", "max", "worst tensor abs"),
)


def worst_by_model_precision(records: list) -> list:
    """Per (model, backend, precision, check): verdict counts and the worst of each metric,
    with the limit the record was judged against (the tolerance table's row, or a model's
    override) and the replay command of the worst case."""
    groups: dict = {}
    for record in records:
        key = (record.get("model"), record.get("backend"), record.get("precision"), record.get("check"))
        group = groups.setdefault(key, {"model": key[0], "backend": key[1], "precision": key[2], "check": key[3],
                                        "cases": 0, "verdicts": {}, "metrics": {}})
        group["cases"] += 1
        verdict = record.get("verdict")
        group["verdicts"][verdict] = group["verdicts"].get(verdict, 0) + 1
        for comparison in record.get("comparisons", []):
            kind = comparison.get("kind")
            for column_kind, metric, field, direction, label in ERROR_COLUMNS:
                if kind != column_kind:
                    continue
                raw = (comparison.get("metrics") or {}).get(metric)
                value = _metric(raw)
                if value is None:
                    continue
                if math.isnan(value):
                    if direction == "min":  # a minimum over no pairs (nothing matched): nothing to report
                        continue
                    value = math.inf  # an error that is NaN: garbage in the candidate, the worst there is
                current = group["metrics"].get(label)
                worse = current is None or (value > current["value"] if direction == "max"
                                            else value < current["value"])
                if worse:
                    tolerance = comparison.get("tolerance") or {}
                    group["metrics"][label] = {
                        "value": value, "limit": tolerance.get(field), "direction": direction,
                        "limit_field": field, "rtol": tolerance.get("score_rtol") if "score" in field else None,
                        "tolerance_source": comparison.get("tolerance_source"),
                        "verdict": comparison.get("verdict"), "replay": record.get("replay"),
                        "size": f"{record.get('height')}x{record.get('width')}", "batch": record.get("batch")}
    return sorted(groups.values(), key=lambda g: (g["model"] or "", g["check"] or "", g["backend"] or ""))


def _metric_cell(entry) -> str:
    if not entry:
        return "-"
    value, limit = entry["value"], entry.get("limit")
    text = "inf" if value in (math.inf, -math.inf) else _fmt(value)
    if isinstance(limit, (int, float)):
        beyond = value > limit if entry["direction"] == "max" else value < limit
        rtol = f"+{_fmt(entry['rtol'])}r" if entry.get("rtol") else ""
        # With a relative part the limit depends on |ref|, which the record does not keep: only
        # the comparison's own verdict says whether it was beyond.
        text += f" / {_fmt(float(limit))}{rtol}" + (" **!**" if beyond and not rtol else "")
    if entry.get("verdict") == "fail":
        text += " FAIL"
    return text


def render_markdown(summary: dict, brief: bool = False) -> str:
    lines = []
    add = lines.append
    stack = summary.get("stack") or {}
    torch_info = stack.get("torch") or {}
    ort = stack.get("onnxruntime") or {}
    if not brief:
        add(f"# GPU smoke: {summary.get('mode')} run, {summary.get('started_at')}")
        add("")
        add(f"`{summary.get('command')}`; elapsed {summary.get('elapsed_seconds')}s of "
            f"{summary.get('deadline_seconds')}s")
        add("")
        add("## Stack")
        add("")
        devices = ", ".join(f"{d['name']} (sm {d['capability']}, {d['memory_gib']} GiB)"
                            for d in torch_info.get("devices", [])) or "none"
        smi = stack.get("nvidia_smi") or {}
        add(f"- Python {stack.get('python')} on {stack.get('platform')}")
        init = (f", CUDA init {torch_info['cuda_init_seconds']}s" if torch_info.get("cuda_init_seconds") is not None
                else "")
        add(f"- torch {torch_info.get('version')}, CUDA build {torch_info.get('cuda_build')}, cuDNN "
            f"{torch_info.get('cudnn')}, cuda available {torch_info.get('cuda_available')}{init}")
        add(f"- GPU: {devices}; driver {smi.get('driver')} (CUDA {smi.get('cuda_driver_api')})")
        add(f"- onnxruntime {ort.get('version')}: {ort.get('providers')}")
        mods = stack.get("modules") or {}
        add("- imports: " + ", ".join(f"{n} {m.get('version') or ''}".strip() if m.get("ok") else f"{n} MISSING"
                                      for n, m in mods.items()))
        for name, value in (torch_info.get("checks") or {}).items():
            add(f"- CUDA check `{name}`: `{json.dumps(value, default=str)[:300]}`")
        deps = summary.get("deps") or {}
        add("")
        add("## Dependencies")
        add("")
        add(f"- missing in the image (harness imports): {deps.get('missing_in_image') or 'nothing'}")
        if deps.get("extracted"):
            add("- extracted from wheels: " + ", ".join(e["wheel"] for e in deps["extracted"]))
        if deps.get("after_fallback"):
            add(f"- still missing after that: {sorted(deps['after_fallback'].get('missing', {})) or 'nothing'}")
        if deps.get("import_errors"):
            add(f"- import errors: `{deps['import_errors']}`")
        add("")
    parity = summary.get("parity") or {}
    add("## Parity: tests per model x backend" if not brief else "parity tests per model x backend:")
    add("")
    if parity.get("runs"):
        for backend, run in parity["runs"].items():
            add(f"- {backend}: {'TIMED OUT' if run['timed_out'] else 'exit ' + str(run['rc'])} in {run['seconds']}s, "
                f"{run.get('records')} records, tests {run.get('tests')}")
            if run.get("running_when_stopped"):
                add(f"  - still running when stopped: {run['running_when_stopped']}")
            if run.get("log_tail") and not brief:
                add("")
                add("  ```")
                lines.extend("  " + line for line in run["log_tail"].splitlines())
                add("  ```")
        add("")
        add("| model | backend | status | passed | failed | error | skipped | first problem |")
        add("|---|---|---|---|---|---|---|---|")
        for row in parity.get("tests", []):
            problem = (row["problems"][0] if row["problems"] else "").replace("|", "/")[:160]
            add(f"| {row['model']} | {row['backend']} | {row['status']} | {row['passed']} | {row['failed']} | "
                f"{row['error']} | {row['skipped']} | {problem} |")
        add("")
        add("## Worst errors per model x precision (parity check), value / limit (r: + score_rtol x |ref|; "
            "!: beyond the limit; FAIL: that comparison failed)" if not brief
            else "worst errors (parity check), value / limit (r: + score_rtol x |ref|; !: beyond the limit; "
            "FAIL: that comparison failed):")
        add("")
        columns = [c[4] for c in ERROR_COLUMNS]
        add("| model | backend | prec | cases | verdicts | " + " | ".join(columns) + " |")
        add("|---|---|---|---|---|" + "---|" * len(columns))
        for group in parity.get("errors", []):
            if group["check"] != "parity":
                continue
            verdicts = ", ".join(f"{k} {v}" for k, v in sorted(group["verdicts"].items()))
            add(f"| {group['model']} | {group['backend']} | {group['precision']} | {group['cases']} | {verdicts} | "
                + " | ".join(_metric_cell(group["metrics"].get(c)) for c in columns) + " |")
        if not brief:
            add("")
            add("Other checks (batch consistency, determinism):")
            add("")
            add("| model | backend | check | cases | verdicts |")
            add("|---|---|---|---|---|")
            for group in parity.get("errors", []):
                if group["check"] != "parity":
                    verdicts = ", ".join(f"{k} {v}" for k, v in sorted(group["verdicts"].items()))
                    add(f"| {group['model']} | {group['backend']} | {group['check']} | {group['cases']} | {verdicts} |")
    else:
        add("(not run)")
    add("")
    bench = summary.get("bench") or {}
    add("## Latency (one fresh process per pair)" if not brief else "latency:")
    add("")
    if bench.get("pairs"):
        add("| model | backend | prec | HxW | create ms | 1st infer ms | warm median ms | p99 ms | throughput img/s |")
        add("|---|---|---|---|---|---|---|---|---|")
        for pair in bench["pairs"]:
            for r in pair["results"]:
                if r.get("error"):
                    add(f"| {r.get('model')} | {r.get('backend')} | {r.get('precision') or '-'} | | "
                        f"{str(r['error'])[:120].replace('|', '/')} | | | | |")
                    continue
                cold, warm = r["cold"], r["warm"]
                throughput = ", ".join(f"b{t['batch']} {t['images_per_second']:.0f}" for t in r.get("throughput", []))
                add(f"| {r['model']} | {r['backend']} | {r['precision']} | {r['height']}x{r['width']} | "
                    f"{cold['create_seconds'] * 1000:.1f} | {cold['first_infer_seconds'] * 1000:.1f} | "
                    f"{warm['median_ms']:.2f} | {warm['p99_ms']:.2f} | {throughput} |")
        if bench.get("skipped"):
            add("")
            add(f"skipped for lack of time: {', '.join(bench['skipped'])}")
    else:
        add("(not run)")
    add("")
    if summary.get("notes") or summary.get("problems"):
        add("## Notes and problems" if not brief else "notes and problems:")
        add("")
        for note in summary.get("notes", []):
            add(f"- {note}")
        for problem in summary.get("problems", []):
            add(f"- PROBLEM: {problem if not brief else problem.splitlines()[0][:300]}")
        add("")
    add("phases: " + ", ".join(f"{n} {p['status']} {p['seconds']}s" for n, p in summary.get("phases", {}).items()))
    return "\n".join(lines) + "\n"


# ============================================================================ entry point


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python tools/gpu_smoke.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("out", nargs="?", help="output folder (created)")
    parser.add_argument("--dry-run", action="store_true", help="CPU backends, tiny budget (automatic without CUDA)")
    parser.add_argument("--deadline", type=float, default=None,
                        help=f"global wall-clock budget in seconds (default {DEFAULT_DEADLINE_S:.0f}; dry run "
                             f"{DRY_DEADLINE_S:.0f})")
    parser.add_argument("--rehearse", action="store_true",
                        help="the GPU plan (default zoo, ci profile, full bench settings) even without CUDA: give "
                             "CPU --backends/--bench-backends to rehearse budgets and reports on a CPU machine")
    parser.add_argument("--wheels", default=".whl", help="folder of wheels for what the image lacks (default .whl)")
    parser.add_argument("--models", action="append", help="model cases (default: the default zoo; dry run: "
                                                           f"{DRY_MODEL})")
    parser.add_argument("--backends", action="append", help="parity backends (default: the three torch CUDA ones; "
                                                             "dry run: torch-cpu)")
    parser.add_argument("--bench-backends", action="append", help="benchmark backends (default as --backends)")
    parser.add_argument("--no-comparison", action="store_true", help=f"no {COMPARISON_BACKEND} benchmark")
    parser.add_argument("--profile", default=None, help="Hypothesis profile (default ci; dry run: 2 examples)")
    parser.add_argument("--dry-examples", type=int, default=2, help="max_examples of the dry run's profile")
    parser.add_argument("--parity-jobs", type=int, default=3, help="pytest processes side by side (one per backend)")
    parser.add_argument("--parity-timeout", type=float, default=240, help="parity phase limit, seconds")
    parser.add_argument("--bench-reserve", type=float, default=120, help="seconds kept for the bench phase")
    parser.add_argument("--pair-timeout", type=float, default=60, help="limit per benchmark process, seconds")
    parser.add_argument("--min-pair-seconds", type=float, default=12,
                        help="start no benchmark pair with less time left than this")
    parser.add_argument("--probe-timeout", type=float, default=60, help="limit of the stack probe, seconds")
    parser.add_argument("--torch-threads", type=int, default=0, help="PARITY_TORCH_THREADS for the suites (0: the "
                                                                     "harness default, 1)")
    parser.add_argument("--prepare-wheels", metavar="DIR", help="download the wheels the GPU image lacks into DIR")
    parser.add_argument("--python-version", default="3.12", help="with --prepare-wheels: the GPU image's Python")
    parser.add_argument("--with", dest="extra", action="append", default=[], metavar="PKG",
                        help="with --prepare-wheels: download PKG too (e.g. scipy)")
    parser.add_argument("--probe", metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--name", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (args.prepare_wheels or args.probe or args.out):
        parser.error("the output folder is required")
    if args.deadline is None:
        args.deadline = DRY_DEADLINE_S if args.dry_run else DEFAULT_DEADLINE_S
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.probe:
        return probe(args.probe, args.name, args.full)
    if args.prepare_wheels:
        return prepare_wheels(args.prepare_wheels, args.python_version, args.extra, [sys.executable, "-m", "pip"])
    return Smoke(args).run()


if __name__ == "__main__":
    sys.exit(main())
