"""Each GPU stack, resolved by pip against the real indexes, is one CUDA major and has no CPU onnxruntime.

`pip install --dry-run --ignore-installed --report` of requirements/gpu-<stack>.txt for
this interpreter, parsed by deploy_parity.gpu_stack.report_problems: every nvidia-*,
cuda-*, torch, onnxruntime-gpu and tensorrt* wheel of the stack's CUDA major.

Needs the network: skipped, saying so, when PyPI is unreachable. TensorRT's libraries
are wheels on NVIDIA's index (PyPI has stubs that fetch them from there at install): when
https://pypi.nvidia.com is unreachable too, the TensorRT lines are resolved without
dependencies and their libraries checked by name (tensorrt_cu12_libs, ...), and the
test says so in a warning. The nightly runs the full resolution on the GPU runner
(.github/workflows/nightly-gpu.yml). Local pip configuration (constraints, find-links)
is left out so the machine's own caps do not change the answer.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
import warnings

import pytest

from deploy_parity.gpu_stack import STACKS, majors_summary, normalize, report_problems

KEEP_PIP_ENV = {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT",
                "PIP_CLIENT_CERT", "PIP_PROXY"}


def reachable(url: str) -> str:
    """'' if `url` answers within 10 s, else why not."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10).close()
        return ""
    except Exception as exc:  # DNS, refused, proxy, TLS: all mean "cannot resolve here"
        return f"{type(exc).__name__}: {exc}"


def pip_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in KEEP_PIP_ENV}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def dry_run(tmp_path, requirements: list, name: str, *options) -> dict:
    requirement_file = tmp_path / f"{name}.txt"
    requirement_file.write_text("\n".join(requirements) + "\n")
    report = tmp_path / f"{name}.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
               str(report), *options, "-r", str(requirement_file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=pip_env(),
                            cwd=STACKS["cu12"].requirements_path().parent)
    assert result.returncode == 0, f"pip could not resolve {name}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return json.loads(report.read_text())


@pytest.mark.slow  # about a minute per stack: pip reads torch's and every CUDA wheel's metadata
@pytest.mark.parametrize("stack_name", ["cu12", "cu13", "trt-canary"])
def test_the_stack_resolves_to_one_cuda_major_without_cpu_onnxruntime(stack_name, tmp_path):
    why_not = reachable("https://pypi.org/simple/pip/")
    if why_not:
        pytest.skip(f"PyPI is unreachable from here ({why_not}): the GPU stacks cannot be resolved")
    stack = STACKS[stack_name]
    here = stack.requirements_path().parent
    lines = [re.sub(r"^-r\s+", f"-r {here}/", line.strip()) for line in stack.requirements_path().read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    nvidia_down = reachable("https://pypi.nvidia.com/")
    extra_names = []
    if not nvidia_down:
        report = dry_run(tmp_path, lines, stack_name)
    else:
        tensorrt = [line for line in lines if line.startswith("tensorrt")]
        rest = [line for line in lines if not line.startswith("tensorrt") and "pypi.nvidia.com" not in line]
        report = dry_run(tmp_path, rest, stack_name)
        trt_report = dry_run(tmp_path, tensorrt, f"{stack_name}-tensorrt", "--no-deps")
        for entry in trt_report["install"]:
            report["install"].append(entry)
            for requirement in entry["metadata"].get("requires_dist") or []:
                name = normalize(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))
                if name.startswith("tensorrt"):
                    extra_names.append(name)
        warnings.warn(f"NVIDIA's index is unreachable ({nvidia_down}): TensorRT's libraries were checked by name "
                      f"({', '.join(sorted(set(extra_names)))}), not resolved")
    problems = report_problems(report, stack, extra_names)
    assert not problems, "\n".join(problems) + "\n" + majors_summary(report, extra_names)
    installed = {normalize(item["metadata"]["name"]): item["metadata"]["version"] for item in report["install"]}
    for name, version in stack.all_pins().items():  # gpu-common.txt's pins too: they must hold with this torch
        assert installed.get(name) == version, (name, installed.get(name), version)
    assert any(name.startswith("nvidia-") for name in installed)  # the CUDA wheels really were resolved
