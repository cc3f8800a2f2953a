"""Run pytest (the parity suites, as a user would) or a Python module in a fresh process,
and read what a suite run wrote.

The one way tests build and run a subprocess of this repository's Python:
`python_command`/`pytest_command`/`suite_command` build the command line, `run_command`/
`run_python`/`run_pytest` run one to its end (cwd the repository, `suite_env()` plus what a
test adds, stdout and stderr apart, as text, with a timeout), `run_suite` runs a suite with
its own reports dir and cache, and `start_suite` starts one in the background.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class SuiteRun:
    returncode: int
    output: str
    reports_dir: Path

    @property
    def run_summary(self) -> dict:
        return json.loads((self.reports_dir / "run.json").read_text())

    def records(self) -> list:
        path = self.reports_dir / "results.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


PARITY_ONLY = "suites/test_parity.py::test_parity"  # the parity property alone


def suite_env(extra: dict | None = None, *, keep_parity: bool = False) -> dict:
    """This process's environment for a child: without the outer run's PYTEST_* and
    HYPOTHESIS_* settings (the child's command line decides those) and, unless
    `keep_parity`, without its PARITY_* settings; plus `extra`."""
    dropped = ("PYTEST_", "HYPOTHESIS_") if keep_parity else ("PYTEST_", "HYPOTHESIS_", "PARITY_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def python_command(*args: str) -> list:
    """`python ARGS` with the interpreter running the tests."""
    return [sys.executable, *args]


def pytest_command(*args: str, target: str = "suites") -> list:
    """`python -m pytest TARGET -p no:cacheprovider ARGS`."""
    return python_command("-m", "pytest", target, "-p", "no:cacheprovider", *args)


def suite_command(reports: Path, cache: Path, *args: str, target: str = "suites", profile: str = "ci",
                  history: str = "off") -> list:
    """The pytest command line of a suite run with its own reports dir and cache. Pictures
    and history cost seconds per run; the tests that need them ask for them."""
    return pytest_command("--hypothesis-profile", profile, "--reports-dir", str(reports), "--parity-cache-dir",
                          str(cache), "--report-images", "0", "--history-db", history, *args, target=target)


def run_command(command: list, *, env: dict | None = None, keep_parity: bool = False,
                timeout: float = 300) -> subprocess.CompletedProcess:
    """`command` run to its end in the repository, in suite_env(env, keep_parity=...):
    stdout and stderr apart, as text."""
    return subprocess.run(command, cwd=REPO, env=suite_env(env, keep_parity=keep_parity), capture_output=True,
                          text=True, timeout=timeout)


def run_python(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python ARGS` (e.g. "-m", "reports.merge", ...) run to its end: see run_command."""
    return run_command(python_command(*args), env=env, timeout=timeout)


def run_pytest(*args: str, target: str = "suites", env: dict | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """`pytest TARGET ARGS` run to its end: see pytest_command and run_command."""
    return run_command(pytest_command(*args, target=target), env=env, timeout=timeout)


def start_suite(reports: Path, cache: Path, *args: str, output=subprocess.PIPE, preexec_fn=None,
                **options) -> subprocess.Popen:
    """A suite run (suite_command) in the background, not waited for: stdout and stderr
    together, as text, into `output` (a pipe to read, or subprocess.DEVNULL)."""
    return subprocess.Popen(suite_command(reports, cache, *args, **options), cwd=REPO, env=suite_env(),
                            stdout=output, stderr=subprocess.STDOUT, text=True, preexec_fn=preexec_fn)


def run_suite(tmp_path: Path, *args: str, profile: str = "ci", cache_dir: Path | None = None,
              timeout: int = 1200, target: str = "suites") -> SuiteRun:
    """`pytest <target> <args>` in a fresh process, reports (and, unless given, the cache) under tmp_path.
    The child keeps this process's PARITY_* settings: a test sets one (monkeypatch.setenv) for
    what the child's cases read, e.g. PARITY_CACHE_DIR where an onnx_path function writes."""
    reports = tmp_path / f"reports-{len(list(tmp_path.glob('reports-*')))}"
    done = run_command(suite_command(reports, cache_dir or (tmp_path / "cache"), *args, target=target,
                                     profile=profile), keep_parity=True, timeout=timeout)
    return SuiteRun(done.returncode, done.stdout + done.stderr, reports)
