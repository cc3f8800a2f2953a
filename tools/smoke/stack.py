"""The stack phase: the probe child's findings (Python, modules, torch and CUDA checks, ONNX
Runtime, the harness's imports), the driver from nvidia-smi and the wheels at hand, in
stack.json and the log. run_probe is also the deps phase's second look after extracting."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .files import tail, write_json
from .layout import ENTRY_SCRIPT


def run_probe(run, full: bool, names: list, label: str, timeout: float) -> dict:
    """The probe child's JSON (see probe.probe), with how the child ended under "child"."""
    path = run.work / f"probe-{label}.json"
    command = [sys.executable, str(ENTRY_SCRIPT), "--probe", str(path)]
    command += ["--full"] if full else []
    command += [a for n in names for a in ("--name", n)]
    done = run.run_child(command, timeout, run.out / "logs" / f"probe-{label}.log")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {"problems": []}
    data["child"] = done
    if done["rc"] != 0 or done["timed_out"]:
        data.setdefault("problems", []).append(f"probe {label}: exit {done['rc']}, timed out {done['timed_out']}:"
                                               f" {tail(Path(done['log']).read_text(), 8)}")
    return data


def stack_phase(run) -> None:
    wheels = run.wheels()
    names = sorted({n for _, tops in wheels for n in tops})
    data = run_probe(run, True, names, "stack", min(run.args.probe_timeout, run.remaining() - 30))
    data["nvidia_smi"] = nvidia_smi()
    data["wheels_dir"] = {"path": str(run.wheels_dir()), "wheels": [w.name for w, _ in wheels]}
    run.summary["stack"] = data
    write_json(run.out / "stack.json", data)
    torch_info = data.get("torch") or {}
    mods = data.get("modules", {})
    run.log(f"python {data.get('python')} | torch {torch_info.get('version')} cuda {torch_info.get('cuda_build')} "
            f"available={torch_info.get('cuda_available')} | "
            f"gpu {[d['name'] for d in torch_info.get('devices', [])]} | "
            f"driver {data['nvidia_smi'].get('driver')} | onnxruntime "
            f"{(data.get('onnxruntime') or {}).get('version')} {(data.get('onnxruntime') or {}).get('providers')}")
    run.log("imports: " + ", ".join(f"{n}={'ok' if m.get('ok') else 'MISSING'}" for n, m in mods.items()))
    for name, value in (torch_info.get("checks") or {}).items():
        run.log(f"cuda check {name}: {json.dumps(value, default=str)[:300]}")
    for problem in data.get("problems", []):
        run.summary["problems"].append(problem)


def nvidia_smi() -> dict:
    """The GPU, driver and the CUDA version the driver supports, as nvidia-smi tells them."""
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
