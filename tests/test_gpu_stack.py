"""The pinned GPU stacks and the checks of deploy_parity/gpu_stack.py, on CPU.

- the requirement files: one CUDA major each by name, every line an exact pin, the
  shared part naming pyproject's core dependencies minus onnxruntime / torch /
  torchvision (pinned inside pyproject's ranges), the canary on the cu13 pins and TensorRT 11, docs/gpu.md naming every pin, tox and the nightly installing them with
  deploy-parity's dependencies left out (so the CPU onnxruntime never comes in);
- the driver check (the nightly's first step) and its plain message;
- CUDA majors read from pip's report (synthetic reports here; the real resolution is
  tests/test_gpu_stack_resolve.py);
- the CUDA 13 wheel layout given to Polygraphy's own CUDA runtime search, and a session
  opened to tell whether an ONNX Runtime provider really runs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploy_parity import gpu_stack
from deploy_parity.gpu_stack import STACKS, cuda_major_of, cuda_major_of_requirement, driver_problem, report_problems

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------- requirement files


@pytest.mark.parametrize("stack", ["cu12", "cu13"])
def test_each_stack_pins_torch_onnxruntime_gpu_and_tensorrt_of_its_cuda_major(stack):
    pins = STACKS[stack].pins()
    assert set(pins) >= {"torch", "torchvision", "onnxruntime-gpu", f"tensorrt-{stack}"}
    assert pins[f"tensorrt-{stack}"].startswith("10.")  # libnvinfer.so.10: what onnxruntime-gpu's TensorRT provider links
    text = STACKS[stack].requirements_path().read_text()
    assert "--extra-index-url https://pypi.nvidia.com" in text  # TensorRT's libraries are wheels there
    assert re.search(r"^onnxruntime-gpu\[cuda,cudnn\]==", text, re.M)
    assert not re.search(r"^onnxruntime[=<>~ ]", text, re.M)


def test_the_canary_is_the_cu13_stack_with_tensorrt_11():
    cu13, canary = STACKS["cu13"].all_pins(), STACKS["trt-canary"].all_pins()
    assert {k: v for k, v in canary.items() if k != "tensorrt-cu13"} == {k: v for k, v in cu13.items() if k != "tensorrt-cu13"}
    assert canary["tensorrt-cu13"].startswith("11.")  # `>=11` would take TensorRT 12 the day it appears
    assert STACKS["trt-canary"].tensorrt_major == 11


# An exact pin: name, extras, `==` and a version with no wildcard (`==11.*` is a range).
EXACT_PIN = re.compile(r"^[A-Za-z0-9._-]+(\[[^\]]*\])?==[0-9][0-9A-Za-z.+!-]*$")


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_every_requirement_of_every_stack_is_an_exact_pin(stack):
    """Issue 22, item 8: only torch, onnxruntime-gpu and TensorRT were pinned; onnx,
    Polygraphy, numpy and the rest floated, so a night could change with no change here."""
    lines = gpu_stack.requirement_lines(STACKS[stack].requirements_path())
    assert {path.name for path, _ in lines} == {"gpu-common.txt", STACKS[stack].requirements}
    loose = [f"{path.name}: {line}" for path, line in lines if not EXACT_PIN.match(line.replace(" ", ""))]
    assert not loose, f"not pinned with ==: {loose}"
    names = [gpu_stack.normalize(re.match(r"[A-Za-z0-9._-]+", line).group(0)) for _, line in lines]
    assert len(names) == len(set(names))  # one pin per package
    assert "ultralytics" in names  # the real architectures (YOLO) run on the GPU too (issue 22, item 6)
    assert set(names) == set(STACKS[stack].all_pins())


def core_dependencies(extras=("test",)) -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {}
    for requirement in project["dependencies"] + [r for extra in extras for r in project["optional-dependencies"][extra]]:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        deps[gpu_stack.normalize(name)] = requirement.replace(" ", "")
    return deps


def test_the_shared_gpu_requirements_are_the_core_dependencies_without_onnxruntime():
    from packaging.requirements import Requirement

    shared = gpu_stack.read_pins(ROOT / "requirements" / "gpu-common.txt")
    core = core_dependencies(extras=("test", "ultralytics"))
    expected = {name: spec for name, spec in core.items() if name not in ("onnxruntime", "torch", "torchvision")}
    assert set(shared) == set(expected)  # deploy-parity goes in with --no-deps: this list is all it gets
    outside = {name: (shared[name], spec) for name, spec in expected.items()
               if not Requirement(spec).specifier.contains(shared[name], prereleases=True)}
    assert not outside, f"pins outside pyproject.toml's ranges: {outside}"
    assert "polygraphy" in core  # a core dependency now


def test_docs_name_every_pin_and_minimum_driver():
    docs = (ROOT / "docs" / "gpu.md").read_text()
    for stack in ("cu12", "cu13"):
        for name, version in STACKS[stack].pins().items():
            assert f"{name} {version}" in docs or f"{name}=={version}" in docs, (stack, name, version)
        assert STACKS[stack].min_driver in docs
    assert "tox -e gpu-cu12" in docs and "tox -e gpu-cu13" in docs and "tox -e trt-canary" in docs


def test_tox_gpu_envs_check_the_driver_first_and_install_the_stack_without_deploy_paritys_dependencies():
    tox = (ROOT / "tox.ini").read_text()
    section = tox[tox.index("[testenv:gpu-cu{12,13}]"):]
    section = section[:section.index("\n[", 1)] if "\n[" in section[1:] else section
    commands = section[section.index("commands_pre"):]
    driver, install, no_deps, runtime = (commands.index(s) for s in (
        "gpu_stack.py driver", "pip install -r requirements/gpu-{env:STACK}.txt", "pip install --no-deps -e .",
        "deploy_parity.gpu_stack runtime"))
    assert driver < install < no_deps < runtime
    assert "skip_install = true" in section
    assert "trt-fp16" in section and "-m \"gpu or trt\"" in section


def test_the_nightly_checks_the_driver_before_installing_and_never_lets_a_failure_pass_silently():
    workflow = (ROOT / ".github" / "workflows" / "nightly-gpu.yml").read_text()
    assert "shell: bash" in workflow  # GitHub runs `bash -eo pipefail` only when the shell is named
    assert "set -o pipefail" in workflow
    main_job = workflow[workflow.index("gpu-parity:"):workflow.index("trt-canary:")]
    assert "continue-on-error" not in main_job
    assert main_job.index("gpu_stack.py driver") < main_job.index("pip install -r requirements/gpu-")
    assert main_job.index("--dry-run") < main_job.index("pip install -r requirements/gpu-")
    assert "pip install --no-deps -e ." in main_job and "pip install -e '.[" not in main_job
    assert "deploy_parity.gpu_stack runtime" in main_job


# ------------------------------------------------------------------------------ driver


def test_a_driver_older_than_the_stack_says_what_to_install_and_which_stack_it_can_run():
    assert driver_problem(STACKS["cu13"], "580.65.06") == ""
    assert driver_problem(STACKS["cu13"], "590.44.01") == ""
    problem = driver_problem(STACKS["cu13"], "550.54.15")
    assert problem.startswith("NVIDIA driver 550.54.15 is older than the 580 that the CUDA 13 stack 'cu13' "
                              "(onnxruntime-gpu 1.31.1, tensorrt-cu13 10.16.1.11, torch 2.14.1, torchvision 0.29.1) needs")
    assert "install NVIDIA driver 580 or newer" in problem
    assert "run the CUDA 12 stack (STACK=cu12, pip install -r requirements/gpu-cu12.txt, tox -e gpu-cu12)" in problem
    assert driver_problem(STACKS["cu12"], "525.60.13") == ""
    too_old = driver_problem(STACKS["cu12"], "520.61.05")
    assert "older than the 525.60.13" in too_old and "run the CUDA" not in too_old


def test_python_outside_the_stacks_wheels_is_named():
    assert gpu_stack.python_problem((3, 12)) == ""
    assert "Python 3.10 has no wheels" in gpu_stack.python_problem((3, 10))
    assert "no cp314" in gpu_stack.python_problem((3, 14))


def test_driver_versions_come_from_nvidia_smi_and_a_missing_driver_is_a_reason():
    answer = subprocess.CompletedProcess([], 0, stdout="580.95.05\n580.95.05\n", stderr="")
    assert gpu_stack.driver_versions(run=lambda *a, **k: answer) == ["580.95.05", "580.95.05"]

    def absent(*args, **kwargs):
        raise FileNotFoundError("nvidia-smi")

    with pytest.raises(RuntimeError, match="nvidia-smi not found: no NVIDIA driver"):
        gpu_stack.driver_versions(run=absent)


def test_the_driver_check_runs_by_path_with_the_standard_library_alone():
    script = ROOT / "deploy_parity" / "gpu_stack.py"
    code = ("import runpy, sys; sys.argv = ['gpu_stack.py', 'driver', '--stack', 'cu13', '--driver-version', '550.54.15'];"
            f"sys.modules['torch'] = None; sys.modules['numpy'] = None; runpy.run_path({str(script)!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "NOT A SUPPORTED GPU STACK" in result.stderr and "install NVIDIA driver 580 or newer" in result.stderr
    ok = subprocess.run([sys.executable, str(script), "driver", "--stack", "cu12", "--driver-version", "535.104.05"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == (0 if not gpu_stack.python_problem() else 1), ok.stdout + ok.stderr


# --------------------------------------------------------------------- pip's report


@pytest.mark.parametrize("name, version, major", [
    ("nvidia-cuda-runtime-cu12", "12.8.90", 12),
    ("nvidia_cudnn_cu13", "9.24.0.43", 13),
    ("nvidia-cuda-runtime", "13.0.96", 13),  # CUDA 13's unsuffixed wheels: the version is CUDA's
    ("nvidia-cublas", "13.1.1.3", 13),
    ("nvidia-cufft", "12.0.0.61", 13),  # ... except libraries with their own versions, unsuffixed only from 13
    ("cuda-toolkit", "13.0.3.0", 13),
    ("cuda-bindings", "12.9.4", 12),
    ("tensorrt-cu12-libs", "10.16.1.11", 12),
    ("tensorrt_cu13_bindings", "11.4.0.106", 13),
    ("torch", "2.10.0+cu128", 12),
    ("torch", "2.14.1", None),  # from PyPI: known only through what it requires
    ("nvidia-ml-py", "13.615.71", None),  # NVML bindings: versioned with the driver, not CUDA
    ("cuda-pathfinder", "1.9.1", None),
    ("numpy", "2.4.6", None),
])
def test_cuda_major_of_a_wheel(name, version, major):
    assert cuda_major_of(name, version) == major


def test_cuda_major_of_a_requirement_line():
    assert cuda_major_of_requirement('nvidia-cuda-runtime-cu12==12.8.90; platform_system == "Linux"') == 12
    assert cuda_major_of_requirement('cuda-toolkit[cublas,cudart]==13.0.3; platform_system == "Linux"') == 13
    assert cuda_major_of_requirement('nvidia-cuda-nvrtc~=13.0; extra == "cuda"') == 13
    assert cuda_major_of_requirement("cuda-bindings<14,>=13.0.3") is None  # no lower bound read: not counted
    assert cuda_major_of_requirement("tensorrt_cu13==11.4.0.106") == 13


def item(name, version, requires=()):
    return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)}}


CU12_REPORT = {"install": [
    item("torch", "2.10.0", ['nvidia-cuda-runtime-cu12==12.8.90; platform_system == "Linux"', "filelock"]),
    item("nvidia-cuda-runtime-cu12", "12.8.90"),
    item("nvidia-cudnn-cu12", "9.10.2.21", ["nvidia-cublas-cu12"]),
    item("onnxruntime-gpu", "1.26.0", ['nvidia-cuda-runtime-cu12~=12.0; extra == "cuda"', "numpy"]),
    item("tensorrt-cu12", "10.16.1.11", ["tensorrt_cu12_libs==10.16.1.11", "tensorrt_cu12_bindings==10.16.1.11"]),
    item("numpy", "2.4.6"),
]}


def test_a_report_of_one_cuda_major_without_cpu_onnxruntime_is_the_stack():
    assert report_problems(CU12_REPORT, STACKS["cu12"]) == []
    assert "not CUDA 13: " in report_problems(CU12_REPORT, STACKS["cu13"])[0]


def test_a_report_mixing_majors_or_bringing_cpu_onnxruntime_is_refused_naming_the_wheels():
    mixed = {"install": CU12_REPORT["install"][:3] + [
        item("onnxruntime-gpu", "1.23.2", ['nvidia-cuda-runtime-cu12~=12.0; extra == "cuda"']),
        item("torch", "2.14.1", ['cuda-toolkit[cudart]==13.0.3; platform_system == "Linux"']),
        item("nvidia-cuda-runtime", "13.0.96"),
        item("onnxruntime", "1.32.0"),
    ][::-1]}
    problems = report_problems(mixed, STACKS["cu12"])
    assert any("CPU `onnxruntime` is in the install" in p for p in problems)
    assert any(p.startswith("not CUDA 12: nvidia-cuda-runtime 13.0.96 (CUDA 13), torch 2.14.1 (CUDA 13)") for p in problems)
    assert "no TensorRT wheel in the install" in problems


def test_tensorrt_names_unresolved_by_the_report_still_count():
    report = {"install": [i for i in CU12_REPORT["install"] if i["metadata"]["name"] != "tensorrt-cu12"]}
    assert "no TensorRT wheel in the install" in report_problems(report, STACKS["cu12"])
    assert report_problems(report, STACKS["cu12"], extra_names=["tensorrt_cu12_libs"]) == []
    assert "tensorrt-cu13-libs ? (CUDA 13)" in report_problems(report, STACKS["cu12"], extra_names=["tensorrt_cu13_libs"])[0]


# ---------------------------------------------------------------- libraries, providers


def test_cuda_runtime_dirs_cover_the_cuda_13_and_cuda_12_wheel_layouts(tmp_path):
    from deploy_parity.backends.tensorrt.libs import cuda_runtime_dirs, expose_cuda_runtime

    cu13 = tmp_path / "a" / "nvidia" / "cu13" / "lib"
    cu12 = tmp_path / "b" / "nvidia" / "cuda_runtime" / "lib"
    for directory, lib in ((cu13, "libcudart.so.13"), (cu12, "libcudart.so.12")):
        directory.mkdir(parents=True)
        (directory / lib).write_bytes(b"")
    (tmp_path / "c" / "nvidia" / "cu13" / "lib").mkdir(parents=True)  # no libcudart: not offered
    roots = [tmp_path / r / "nvidia" for r in "abc"]
    assert cuda_runtime_dirs(roots) == [str(cu13), str(cu12)]
    environ = {"LD_LIBRARY_PATH": "/opt/other"}
    assert expose_cuda_runtime(environ, roots) == [str(cu13), str(cu12)]
    assert environ["LD_LIBRARY_PATH"] == f"{cu13}:{cu12}:/opt/other"
    expose_cuda_runtime(environ, roots)
    assert environ["LD_LIBRARY_PATH"] == f"{cu13}:{cu12}:/opt/other"  # idempotent


def test_polygraphys_own_cuda_runtime_search_finds_the_cuda_13_wheel_once_exposed(tmp_path, monkeypatch):
    """Polygraphy's real search (polygraphy/cuda/cuda.py) misses nvidia/cu13/lib; after expose_cuda_runtime it takes it first."""
    cuda = pytest.importorskip("polygraphy.cuda.cuda")
    from polygraphy import util

    from deploy_parity.backends.tensorrt.libs import expose_cuda_runtime

    lib = tmp_path / "nvidia" / "cu13" / "lib"
    lib.mkdir(parents=True)
    (lib / "libcudart.so.13").write_bytes(b"")
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    assert str(lib) not in cuda._find_cuda_lib_dirs()  # the CUDA 13 layout is not searched
    expose_cuda_runtime(roots=[tmp_path / "nvidia"])
    dirs = cuda._find_cuda_lib_dirs()
    assert dirs[0] == str(lib)
    assert util.find_in_dirs("libcudart.so*", dirs) == [str(lib / "libcudart.so.13")]


def test_a_provider_counts_only_when_an_opened_session_runs_on_it():
    import onnxruntime as ort

    from deploy_parity.backends.onnxruntime.providers import open_provider, tiny_model_bytes

    assert open_provider("CPUExecutionProvider") == (True, "")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        ok, why = open_provider("CUDAExecutionProvider")
        assert not ok and "has no CUDAExecutionProvider" in why and "requirements/gpu-cu13.txt" in why
    session = ort.InferenceSession(tiny_model_bytes(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]


def test_a_listed_provider_whose_session_falls_back_is_reported_unusable(monkeypatch):
    """get_available_providers() lists it; the opened session runs on the CPU: not usable, with why."""
    import onnxruntime as ort

    from deploy_parity.backends.onnxruntime import providers as onnxrt_providers

    class FallingBack:
        def __init__(self, model, providers=None, **kwargs):
            self.providers = providers

        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", FallingBack)
    onnxrt_providers.open_provider.cache_clear()
    try:
        ok, why = onnxrt_providers.open_provider("CUDAExecutionProvider")
    finally:
        onnxrt_providers.open_provider.cache_clear()
    assert not ok
    assert "lists CUDAExecutionProvider but an opened session runs on ['CPUExecutionProvider']" in why


def test_without_tensorrt_loading_its_libraries_is_a_no_op():
    import importlib.util

    from deploy_parity.backends.tensorrt.libs import load_tensorrt_libraries

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    assert load_tensorrt_libraries() == {"version": None}
    assert "tensorrt" not in sys.modules


def test_a_failing_gpu_unit_test_does_not_stop_the_parity_suites_yet_fails_the_env():
    """Issue 22, item 5: tox stops an env at its first failing command unless ignore_errors
    is set; with it, every command runs and the env still reports "commands failed"."""
    import configparser

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    for env in ("testenv:gpu-cu{12,13}", "testenv:trt-canary"):
        assert tox[env].get("ignore_errors", "").strip() == "true", env
        joined = tox[env]["commands"].replace("\\\n", " ")  # a trailing backslash continues a command
        commands = [c for c in joined.splitlines() if c.strip()]
        assert commands[0].strip().startswith("pytest tests") and commands[-1].strip().startswith("pytest suites")
        assert not any(c.strip().startswith("-") for c in commands)  # "-" would hide the failure itself


def test_the_workflows_stack_input_is_a_choice_of_the_pinned_stacks():
    """Issue 22, item 9: free text let a typo through to an install of nothing."""
    import yaml

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "nightly-gpu.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    stack = triggers["workflow_dispatch"]["inputs"]["stack"]
    assert stack["type"] == "choice"
    assert sorted(stack["options"]) == sorted(name for name in STACKS if name != "trt-canary")
    assert stack["default"] in stack["options"]


def test_only_stacks_on_tensorrt_10_require_onnxruntimes_tensorrt_provider():
    """Issue 22, item 1: onnxruntime-gpu's TensorRT provider links libnvinfer.so.10 and
    TensorRT 11 ships .so.11, so on the canary the provider can never open; requiring it
    there failed the runtime check before any test ran."""
    required = gpu_stack.onnxruntime_tensorrt_required
    assert required(STACKS["cu12"]) and required(STACKS["cu13"])
    assert not required(STACKS["trt-canary"])
    assert not required(STACKS["cu13"], require_tensorrt=False)  # `runtime --no-tensorrt`
    for stack in STACKS.values():
        assert stack.onnxruntime_tensorrt_expected == (stack.tensorrt_major == gpu_stack.ONNXRUNTIME_TENSORRT_MAJOR), stack
    assert gpu_stack.onnxruntime_tensorrt_note(STACKS["trt-canary"]) == (
        "not expected on this stack (TensorRT 11 ships libnvinfer.so.11; onnxruntime-gpu's provider links .so.10)")


@pytest.mark.parametrize("stack_name, tensorrt_version", [("cu13", "10.16.1.11"), ("trt-canary", "11.4.0.106")])
def test_the_runtime_check_names_the_onnxruntime_tensorrt_provider_a_problem_only_where_it_is_expected(
        stack_name, tensorrt_version, monkeypatch):
    """runtime_report itself, with the GPU parts answered: no provider opens, TensorRT of the stack's major loads."""
    from deploy_parity.backends.onnxruntime import providers as onnxrt_providers
    from deploy_parity.backends.tensorrt import libs as tensorrt_libs

    opened = []

    def no_provider(provider):
        opened.append(provider)
        return False, f"no {provider} here"

    monkeypatch.setattr(gpu_stack, "driver_versions", lambda: ["590.44.01"])
    monkeypatch.setattr(onnxrt_providers, "open_provider", no_provider)
    monkeypatch.setattr(tensorrt_libs, "load_tensorrt_libraries", lambda: {"version": tensorrt_version})
    monkeypatch.setattr(tensorrt_libs, "expose_cuda_runtime", lambda: [])
    stack = STACKS[stack_name]
    facts, problems = gpu_stack.runtime_report(stack)
    assert "CUDAExecutionProvider: no CUDAExecutionProvider here" in problems  # required on every stack
    assert not any("TensorRT 11" in p and "pins TensorRT" in p for p in problems)
    trt_problems = [p for p in problems if p.startswith("TensorrtExecutionProvider")]
    provider_facts = facts["onnxruntime providers (opened sessions)"]
    if stack_name == "cu13":
        assert trt_problems == ["TensorrtExecutionProvider: no TensorrtExecutionProvider here"]
        assert "TensorrtExecutionProvider" in opened
    else:
        assert trt_problems == []
        assert provider_facts["TensorrtExecutionProvider"] == gpu_stack.onnxruntime_tensorrt_note(stack)


GPU_TOX_ENVS = ("testenv:gpu-cu{12,13}", "testenv:trt-canary")


def tox_pass_env(tox, env) -> list:
    """The patterns of `env`'s pass_env, a `{[section]pass_env}` reference followed as tox does."""
    value = tox[env]["pass_env"]
    reference = re.fullmatch(r"\s*\{\[([^\]]+)\]pass_env\}\s*", value)
    if reference:
        value = tox[reference.group(1)]["pass_env"]
    return [line.strip() for line in value.splitlines() if line.strip()]


def test_the_gpu_envs_pass_pip_and_the_tensorrt_stubs_their_index_and_proxy():
    """Issue 22, item 3: PyPI's tensorrt-cuXX-libs are stubs that download the real wheel from
    NVIDIA's index at install time; tox dropped the stub's own index variable and HTTPS_PROXY,
    so a runner reaching NVIDIA only through a proxy or a mirror could not install a stack."""
    import configparser
    from fnmatch import fnmatchcase

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    for env in GPU_TOX_ENVS:
        patterns = tox_pass_env(tox, env)
        for variable in ("WHEEL_STUB_PIP_INDEX_URL", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy",
                         "http_proxy", "no_proxy", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL"):
            assert any(fnmatchcase(variable, pattern) for pattern in patterns), (env, variable)


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_each_stack_file_says_its_tensorrt_libraries_need_nvidias_index_or_a_mirror(stack):
    text = STACKS[stack].requirements_path().read_text()
    comments = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    assert "pypi.nvidia.com" in comments and "WHEEL_STUB_PIP_INDEX_URL" in comments and "PIP_EXTRA_INDEX_URL" in comments


def test_the_driver_check_says_in_one_line_what_tensorrts_install_needs(capsys, monkeypatch):
    note = gpu_stack.tensorrt_index_note(STACKS["cu13"], environ={})
    assert "\n" not in note
    assert note == ("TensorRT's libraries: PyPI's tensorrt-cu13-libs is a stub that fetches the real wheel from "
                    "https://pypi.nvidia.com at install time; a runner that cannot reach it needs a local mirror, "
                    "given with PIP_EXTRA_INDEX_URL (pip takes the real wheel from it) or WHEEL_STUB_PIP_INDEX_URL "
                    "(the stub fetches from it)")
    mirrored = gpu_stack.tensorrt_index_note(STACKS["trt-canary"], environ={"WHEEL_STUB_PIP_INDEX_URL": "https://u:token@m/s"})
    assert "tensorrt-cu13-libs" in mirrored and mirrored.endswith("(set here: WHEEL_STUB_PIP_INDEX_URL)")  # no token in logs
    for variable in ("WHEEL_STUB_PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(variable, raising=False)
    assert gpu_stack.main(["driver", "--stack", "cu13", "--driver-version", "590.44.01"]) == (
        1 if gpu_stack.python_problem() else 0)
    assert note in capsys.readouterr().out.splitlines()  # before anything is installed
