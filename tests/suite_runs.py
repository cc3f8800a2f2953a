"""Run the parity suites in a subprocess, as a user would, and read what they wrote."""

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


def suite_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS_", "PARITY_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def suite_command(reports: Path, cache: Path, *args: str, target: str = "suites", profile: str = "ci",
                  history: str = "off") -> list:
    """The pytest command line of a suite run with its own reports dir and cache."""
    return [sys.executable, "-m", "pytest", target, "-p", "no:cacheprovider", "--hypothesis-profile", profile,
            "--reports-dir", str(reports), "--parity-cache-dir", str(cache), "--report-images", "0",
            "--history-db", history, *args]


def start_suite(reports: Path, cache: Path, *args: str, **options) -> subprocess.Popen:
    """A suite run in the background (stdout and stderr together, as text), not waited for."""
    preexec = options.pop("preexec_fn", None)
    return subprocess.Popen(suite_command(reports, cache, *args, **options), cwd=REPO, env=suite_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=preexec)


def run_suite(tmp_path: Path, *args: str, profile: str = "ci", cache_dir: Path | None = None,
              timeout: int = 1200, target: str = "suites") -> SuiteRun:
    """`pytest <target> <args>` in a fresh process, reports (and, unless given, the cache) under tmp_path."""
    reports = tmp_path / f"reports-{len(list(tmp_path.glob('reports-*')))}"
    cache = cache_dir or (tmp_path / "cache")
    command = [sys.executable, "-m", "pytest", target, "-p", "no:cacheprovider", "--hypothesis-profile", profile,
               "--reports-dir", str(reports), "--parity-cache-dir", str(cache),
               # Pictures and history cost seconds per run; the tests that need them ask for them.
               "--report-images", "0", "--history-db", "off", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS_"))}
    env["PYTHONUNBUFFERED"] = "1"
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return SuiteRun(done.returncode, done.stdout + done.stderr, reports)
