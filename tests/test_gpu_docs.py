"""One description of the GPU nightly: docs/gpu.md, README.md, tox.ini and the workflow agree.

Issue 22 ("documentation disagrees with itself"): README named `tox -e gpu` (no such env)
and left backends out of its list; docs/gpu.md cited a module that is gone, said tox runs
the workflow's commands in order and that the canary runs onnxrt-trt. These tests read
the real files (no mocks) and hold them in step:

1. every `tox -e NAME` in README.md and docs/gpu.md names an env of tox.ini, and
   docs/gpu.md describes every GPU env (names it, its requirements file, its commands);
2. tox's GPU envs, the workflow's jobs and docs/gpu.md's command blocks run the same
   pytest invocations: target, --model set, --backend set, profile, marker, dry run
   (the per-machine options --shard, --history-db, --reports-dir, --junitxml, -ra aside);
3. every repository path the two documents mention exists;
4. README's backend list names every registered backend (docs/gpu.md's table every GPU one);
5. docs/gpu.md explains sharding, the merge, the engine plan and budget, and names the
   workflow's jobs.
"""

from __future__ import annotations

import configparser
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set

import pytest
import yaml

from deploy_parity.backends import BACKENDS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GPU_DOC = ROOT / "docs" / "gpu.md"
TOX_INI = ROOT / "tox.ini"
WORKFLOW = ROOT / ".github" / "workflows" / "nightly-gpu.yml"

GPU_ENVS = {"gpu-cu12", "gpu-cu13", "trt-canary"}
# tox env -> the workflow job that runs the same night on CI
JOB_OF_ENV = {"gpu-cu12": "gpu-parity", "gpu-cu13": "gpu-parity", "trt-canary": "trt-canary"}


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# ------------------------------------------------------------------------ pytest runs


# Options that differ by machine or shard, never by what is checked.
IGNORED_WITH_VALUE = {"--shard", "--history-db", "--reports-dir", "--junitxml"}
IGNORED_FLAGS = {"-ra"}
WITH_VALUE = IGNORED_WITH_VALUE | {"--model", "--backend", "--hypothesis-profile", "-m", "--engine-budget", "-k",
                                   "--model-module", "--case-timeout", "--parity-cache-dir"}


@dataclass(frozen=True)
class Run:
    """One pytest invocation, reduced to what it checks."""

    target: str  # suites or tests
    models: Optional[frozenset]  # None: the default zoo
    backends: Optional[frozenset]  # None: the default backends
    profile: Optional[str]
    marker: Optional[str]
    engine_plan: bool
    other: tuple  # any other option, so that a difference in it is not lost

    def __str__(self):
        parts = [f"pytest {self.target}"]
        if self.models is not None:
            parts.append("--model " + ",".join(sorted(self.models)))
        if self.backends is not None:
            parts.append("--backend " + ",".join(sorted(self.backends)))
        if self.profile:
            parts.append(f"--hypothesis-profile {self.profile}")
        if self.marker:
            parts.append(f"-m {self.marker!r}")
        if self.engine_plan:
            parts.append("--engine-plan")
        parts.extend(self.other)
        return " ".join(parts)


def _expand_shell(word: str, variables: Dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
                  lambda m: variables.get(m.group(1), m.group(0)), word)


def pytest_run(words: List[str]) -> Optional[Run]:
    """The Run of a command's words, or None when it is not a pytest run over a folder."""
    for stop in ("|", "||", "&&", ";"):
        if stop in words:
            words = words[:words.index(stop)]
    if "pytest" not in words:
        return None
    words = words[words.index("pytest") + 1:]
    target, options, other = None, {}, []
    engine_plan = False
    i = 0
    while i < len(words):
        word = words[i]
        name, eq, inline = word.partition("=")
        if word.startswith("-") and name in WITH_VALUE:
            value = inline if eq else (words[i + 1] if i + 1 < len(words) else "")
            i += 1 if eq else 2
            if name not in IGNORED_WITH_VALUE:
                options[name] = value
            continue
        if word == "--engine-plan":
            engine_plan = True
        elif word in IGNORED_FLAGS or word == "":
            pass
        elif word.startswith("-"):
            other.append(word)
        elif target is None:
            target = word.rstrip("/")
        else:
            other.append(word)
        i += 1
    if target is None:
        return None  # e.g. `pytest --list-models`

    def names(option):
        return frozenset(options[option].split(",")) if option in options else None

    return Run(target, names("--model"), names("--backend"), options.get("--hypothesis-profile"), options.get("-m"),
               engine_plan, tuple(sorted(other + [f"{k} {v}" for k, v in options.items()
                                                   if k not in ("--model", "--backend", "--hypothesis-profile", "-m")])))


def runs_of_script(script: str, variables: Dict[str, str]) -> List[Run]:
    """The pytest runs of a bash script (a workflow step, a docs block)."""
    runs = []
    variables = dict(variables)
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assignment = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", words[0])
        if len(words) == 1 and assignment:
            variables[assignment.group(1)] = _expand_shell(assignment.group(2), variables)
            continue
        run = pytest_run([_expand_shell(word, variables) for word in words])
        if run is not None:
            runs.append(run)
    return runs


# ---------------------------------------------------------------------------- tox.ini


def tox_config() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(_read(TOX_INI))
    return parser


def _brace_expand(text: str) -> List[str]:
    """tox's generative names: gpu-cu{12,13} -> gpu-cu12, gpu-cu13."""
    match = re.search(r"\{([^{}]*,[^{}]*)\}", text)
    if not match:
        return [text]
    return [expanded for part in match.group(1).split(",")
            for expanded in _brace_expand(text[:match.start()] + part.strip() + text[match.end():])]


def tox_sections() -> Dict[str, str]:
    """env name -> its [testenv:...] section."""
    envs = {}
    for section in tox_config().sections():
        if section.startswith("testenv:"):
            for name in _brace_expand(section[len("testenv:"):]):
                envs[name] = section
    return envs


def tox_env_names() -> Set[str]:
    config = tox_config()
    listed = {name.strip() for line in config.get("tox", "env_list", fallback="").replace(",", "\n").splitlines()
              for name in _brace_expand(line.strip()) if name.strip()}
    return set(tox_sections()) | listed


def _tox_lines(env: str, key: str, config=None) -> List[str]:
    """An env's setting as lines: {[section]key} references followed, factor conditions applied."""
    config = config or tox_config()
    section = tox_sections().get(env, "testenv")
    value = config.get(section, key, fallback=None)
    if value is None:
        value = config.get("testenv", key, fallback="")
    return _resolve_lines(value, env, config)


def _resolve_lines(value: str, env: str, config) -> List[str]:
    factors = set(env.split("-"))
    lines = []
    for line in value.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        reference = re.fullmatch(r"\{\[([^\]]+)\]([A-Za-z_]+)\}", line)
        if reference:
            lines += _resolve_lines(config.get(reference.group(1), reference.group(2)), env, config)
            continue
        condition = re.match(r"^([A-Za-z0-9_!,-]+):\s+(.*)$", line)
        if condition and "=" not in condition.group(1):
            wanted = set(condition.group(1).split(","))
            if not wanted & factors:
                continue
            line = condition.group(2)
        lines.append(line)
    return lines


def tox_set_env(env: str) -> Dict[str, str]:
    values = {}
    for line in _tox_lines(env, "set_env"):
        name, _, value = line.partition("=")
        values[name.strip()] = value.strip()
    return values


def _tox_substitute(text: str, set_env: Dict[str, str]) -> str:
    def env(match):
        name, default = match.group(1), match.group(3)
        if name in set_env:
            return set_env[name]
        assert default is not None, f"tox.ini uses {{env:{name}}} with no value in set_env and no default"
        return default

    text = text.replace("{posargs}", "")
    return re.sub(r"\{env:([A-Za-z_][A-Za-z0-9_]*)(:([^}]*))?\}", env, text)


def tox_runs(env: str, key: str = "commands") -> List[Run]:
    set_env = tox_set_env(env)
    runs = []
    for line in _tox_lines(env, key):
        run = pytest_run(shlex.split(_tox_substitute(line, set_env)))
        if run is not None:
            runs.append(run)
    return runs


# --------------------------------------------------------------------------- workflow


def workflow() -> dict:
    return yaml.safe_load(_read(WORKFLOW))


def workflow_inputs(flow: dict) -> dict:
    on = flow.get("on", flow.get(True))  # YAML 1.1 reads the key `on` as True
    return on["workflow_dispatch"]["inputs"]


_FALLBACK = re.compile(r"^\$\{\{\s*inputs\.([A-Za-z_]+)\s*\|\|\s*'([^']*)'\s*\}\}$")


def _workflow_value(value) -> str:
    """A scheduled night's value of an env entry: `${{ inputs.X || 'D' }}` is D."""
    value = str(value)
    match = _FALLBACK.match(value.strip())
    return match.group(2) if match else value


def job_runs(job_name: str) -> List[Run]:
    flow = workflow()
    job = flow["jobs"][job_name]
    variables = {k: _workflow_value(v) for k, v in {**flow.get("env", {}), **job.get("env", {})}.items()}
    runs = []
    for step in job["steps"]:
        if "run" in step:
            step_vars = {**variables, **{k: _workflow_value(v) for k, v in step.get("env", {}).items()}}
            runs += runs_of_script(step["run"], step_vars)
    return runs


# ------------------------------------------------------------------------- docs/gpu.md


_BLOCK = re.compile(r"<!--\s*gpu-nightly-commands:\s*([^>]*?)\s*-->\s*\n```[a-z]*\n(.*?)\n```", re.S)


def doc_blocks() -> Dict[str, str]:
    """tox env -> the command block docs/gpu.md shows for it (`<!-- gpu-nightly-commands: ENV... -->`)."""
    blocks = {}
    for match in _BLOCK.finditer(_read(GPU_DOC)):
        for env in match.group(1).split():
            blocks[env] = match.group(2)
    return blocks


def doc_runs(env: str) -> List[Run]:
    blocks = doc_blocks()
    assert env in blocks, (f"docs/gpu.md shows no commands for tox -e {env}: put them in a fenced block right after "
                           f"<!-- gpu-nightly-commands: {env} -->")
    return runs_of_script(blocks[env], {})


def _split(runs: Iterable[Run]):
    runs = list(runs)
    return {r for r in runs if not r.engine_plan}, {r for r in runs if r.engine_plan}


def _show(runs) -> str:
    return "\n  ".join(sorted(map(str, runs))) or "(none)"


# ------------------------------------------------------------------------------ 1. envs


_TOX_E = re.compile(r"\btox\s+-e\s+([A-Za-z0-9_,{}-]+)")


def test_every_tox_env_the_docs_name_exists_and_docs_gpu_describes_every_gpu_env():
    envs = tox_env_names()
    unknown = sorted({f"{path.relative_to(ROOT)}: tox -e {name}"
                      for path in (README, GPU_DOC) for match in _TOX_E.finditer(_read(path))
                      for names in _brace_expand(match.group(1)) for name in names.split(",")
                      if name and name not in envs})
    assert not unknown, f"no such tox env (tox.ini has {sorted(envs)}): {unknown}"

    # The GPU envs: those whose first step is the stack's driver check.
    gpu_envs = {env for env in tox_sections() if any("gpu_stack.py driver" in line for line in _tox_lines(env, "commands_pre"))}
    assert gpu_envs == GPU_ENVS, gpu_envs
    doc = _read(GPU_DOC)
    blocks = doc_blocks()
    for env in sorted(gpu_envs):
        set_env = tox_set_env(env)
        installs = [re.search(r"-r\s+(\S+)", _tox_substitute(line, set_env)).group(1)
                    for line in _tox_lines(env, "commands_pre") if "pip install -r" in line]
        assert f"tox -e {env}" in doc, env
        assert env in blocks, f"docs/gpu.md shows no commands for tox -e {env}"
        assert installs and all(f"`{path}`" in doc for path in installs), (env, installs)


# ----------------------------------------------------------------------- 2. same runs


@pytest.mark.parametrize("env", sorted(GPU_ENVS))
def test_tox_the_workflow_and_docs_gpu_run_the_same_suites_and_unit_tests(env):
    tox_checks, _ = _split(tox_runs(env))
    job_checks, _ = _split(job_runs(JOB_OF_ENV[env]))
    doc_checks, _ = _split(doc_runs(env))
    assert tox_checks, f"tox -e {env} runs no pytest"
    assert tox_checks == job_checks, (f"tox -e {env}:\n  {_show(tox_checks)}\nworkflow job {JOB_OF_ENV[env]}:\n  "
                                      f"{_show(job_checks)}")
    assert doc_checks == tox_checks, (f"docs/gpu.md's block for {env}:\n  {_show(doc_checks)}\ntox -e {env}:\n  "
                                      f"{_show(tox_checks)}")


def test_the_pinned_stack_nights_run_the_gpu_unit_tests_the_zoo_and_the_real_architectures():
    checks, _ = _split(job_runs("gpu-parity"))
    markers = {run.marker for run in checks if run.target == "tests"}
    assert markers == {"gpu or trt"}, markers
    suites = [run for run in checks if run.target == "suites"]
    real = set(tox_set_env("gpu-cu13")["REAL_ARCHITECTURES"].split(","))
    assert {run.models for run in suites} == {None, frozenset(real)}, _show(suites)
    canary = {run for run in _split(job_runs("trt-canary"))[0] if run.target == "suites"}
    assert canary and all("onnxrt-trt" not in run.backends for run in canary), _show(canary)  # libnvinfer.so.10


def test_every_sharded_suite_run_in_the_workflow_is_sharded_and_merged():
    job = workflow()["jobs"]["gpu-parity"]
    script = "\n".join(step.get("run", "") for step in job["steps"])
    suite_lines = [line for line in script.replace("\\\n", " ").splitlines()
                   if "pytest suites" in line and "--engine-plan" not in line]
    assert suite_lines and all("--shard" in line and "--history-db" in line for line in suite_lines), suite_lines
    merge = "\n".join(step.get("run", "") for step in workflow()["jobs"]["merge"]["steps"])
    assert merge.count("python -m reports.merge") == len(suite_lines), merge


def test_docs_gpu_prints_the_engine_plan_of_every_suite_the_workflow_plans():
    _, job_plans = _split(job_runs("gpu-parity"))
    _, doc_plans = _split(doc_runs("gpu-cu13"))
    assert job_plans and doc_plans == job_plans, f"docs:\n  {_show(doc_plans)}\nworkflow:\n  {_show(job_plans)}"


@pytest.mark.parametrize("env", ["gpu-cu12", "gpu-cu13"])
def test_tox_prints_the_engine_plan_of_every_suite_the_workflow_plans(env):
    _, tox_plans = _split(tox_runs(env))
    _, job_plans = _split(job_runs("gpu-parity"))
    assert tox_plans == job_plans, f"tox -e {env}:\n  {_show(tox_plans)}\nworkflow:\n  {_show(job_plans)}"


def test_a_scheduled_night_runs_what_a_dispatched_one_runs_by_default():
    """The workflow's `${{ inputs.X || 'D' }}` fallbacks (a scheduled night has no inputs)
    are the dispatch inputs' defaults."""
    flow = workflow()
    inputs = workflow_inputs(flow)
    texts = [str(v) for v in flow.get("env", {}).values()] + [
        step.get("run", "") for job in flow["jobs"].values() for step in job.get("steps", [])]
    fallbacks = [(m.group(1), m.group(2)) for text in texts
                 for m in re.finditer(r"inputs\.([A-Za-z_]+)\s*\|\|\s*'([^']*)'", text)]
    assert fallbacks
    wrong = [(name, value, inputs[name].get("default")) for name, value in fallbacks
             if str(inputs[name].get("default")) != value]
    assert not wrong, wrong
    assert tox_set_env("gpu-cu13")["GPU_BACKENDS"] == inputs["backends"]["default"]


# ----------------------------------------------------------------------------- 3. paths


_EXTENSIONS = (".py", ".txt", ".yml", ".yaml", ".ini", ".md", ".toml", ".cfg")
# Paths the documents mention that are not this repository's: places inside installed
# packages (Polygraphy's source, NVIDIA's wheels), run outputs (git-ignored), placeholders,
# and the project's shared notes, which live beside the repository (README's bug classes).
_NOT_REPOSITORY = ("polygraphy/", "nvidia/", "tensorrt_libs/", "reports/output", "path/to/", "shared/",
                   ".parity-history/", ".parity_cache/", ".venv/", ".tox/")


def mentioned_paths(text: str) -> Set[str]:
    """Repository-looking paths in code spans, fenced blocks and link targets."""
    fenced = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    rest = re.sub(r"```[^\n]*\n.*?```", " ", text, flags=re.S)
    # A code span may wrap onto the next line; link targets and fenced blocks count too.
    spans = re.findall(r"`([^`]+)`", rest) + re.findall(r"\]\(([^)\s]+)\)", rest) + fenced
    paths = set()
    for span in spans:
        for word in re.split(r"[\s'\"(),;=]+", span):
            word = word.rstrip(".:")
            if "/" not in word or "://" in word or not re.fullmatch(r"[A-Za-z0-9_.\-/]+", word):
                continue
            if not (word.endswith(_EXTENSIONS) or word.endswith("/")):
                continue
            word = word[2:] if word.startswith("./") else word
            if word.startswith(_NOT_REPOSITORY):
                continue
            paths.add(word)
    return paths


def _exists(path: str) -> bool:
    if (ROOT / path).exists():
        return True
    if path.endswith("/") and path.count("/") == 1:
        # A bare folder name (`training/` in README's `models/` row) is relative to the row
        # that names it: it must be a folder somewhere in the first levels of the tree.
        return any(found.is_dir() for depth in ("*", "*/*") for found in ROOT.glob(f"{depth}/{path[:-1]}"))
    return False


@pytest.mark.parametrize("document", [README, GPU_DOC], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_the_docs_mention_exists(document):
    paths = mentioned_paths(_read(document))
    assert paths, document
    missing = sorted(path for path in paths if not _exists(path))
    assert not missing, f"{document.relative_to(ROOT)} names paths that do not exist: {missing}"


# -------------------------------------------------------------------------- 4. backends


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start:end if end >= 0 else len(text)]


_BACKEND_LIKE = re.compile(r"`((?:torch|onnxrt|trt)-[a-z0-9-]+)`")


def test_readmes_backend_list_names_every_backend_and_docs_gpus_table_every_gpu_backend():
    listed = set(_BACKEND_LIKE.findall(_section(_read(README), "## Backends")))
    assert not sorted(set(BACKENDS) - listed), f"README's backend list lacks {sorted(set(BACKENDS) - listed)}"
    assert not sorted(listed - set(BACKENDS)), f"README lists backends that do not exist: {sorted(listed - set(BACKENDS))}"
    table = _section(_read(GPU_DOC), "## The backends")
    rows = set(re.findall(r"^\|\s*`([a-z0-9-]+)`\s*\|", table, re.M))
    gpu = {name for name, backend in BACKENDS.items() if backend.gpu}
    assert gpu and not sorted(gpu - rows), f"docs/gpu.md's backend table lacks {sorted(gpu - rows)}"
    assert not sorted(rows - set(BACKENDS)), sorted(rows - set(BACKENDS))


# -------------------------------------------------------------------- 5. the workflow


def test_docs_gpu_explains_sharding_the_merge_the_engine_plan_and_names_the_workflows_jobs():
    doc = _read(GPU_DOC)
    for words in ("--shard K/N", "python -m reports.merge", "--engine-plan", "--engine-budget",
                  ".github/workflows/nightly-gpu.yml", "PARITY_BUILD_TIMEOUT"):
        assert words in doc, words
    jobs = set(workflow()["jobs"])
    assert {"plan", "gpu-parity", "merge", "trt-canary"} <= jobs
    unnamed = sorted(job for job in jobs if f"`{job}`" not in doc)
    assert not unnamed, f"docs/gpu.md does not name the workflow's jobs {unnamed}"
    assert "deploy_parity/contract_check.py" not in doc  # gone: deploy_parity/contracts/artifact.py
