"""The parity phase: `pytest suites --backend B`, one process per backend side by side on the
one GPU, all stopped at the phase deadline; then what they wrote, read back into the
summary. -> parity/<backend>/{results.jsonl,junit.xml,pytest.log}"""

from __future__ import annotations

import sys
import time

from .files import tail
from .outcomes import count, read_jsonl, read_junit, read_log_outcomes, tests_by_model_backend, worst_by_model_precision
from .plan import SMOKE_PROFILE
from .processes import kill_group, start_child


def write_profile_plugin(run) -> None:
    """A pytest plugin registering the dry run's Hypothesis profile (--dry-examples examples),
    on the children's PYTHONPATH: the harness's own profiles are left as they are."""
    plugin = run.work / "plugin"
    plugin.mkdir(parents=True, exist_ok=True)
    (plugin / "gpu_smoke_profile.py").write_text(
        "from hypothesis import HealthCheck, settings\n"
        f"settings.register_profile({SMOKE_PROFILE!r}, max_examples={run.args.dry_examples}, deadline=None,\n"
        "                          derandomize=True, database=None, print_blob=True,\n"
        "                          suppress_health_check=list(HealthCheck))\n")


def pytest_command(run, backend: str, directory, html: bool) -> list:
    plan = run.plan
    command = [sys.executable, "-m", "pytest", "suites", "--backend", backend,
               "--hypothesis-profile", plan.profile, "--reports-dir", str(directory),
               "-p", "no:cacheprovider", "--junitxml", str(directory / "junit.xml"),
               "--history-db", "off", "--report-images", "0",
               "--parity-cache-dir", str(run.work / f"cache-{backend}"), "-v"]
    if plan.profile == SMOKE_PROFILE:
        command[3:3] = ["-p", "gpu_smoke_profile"]
    if not html:
        command.append("--no-html-report")
    if plan.dry or run.args.models:
        command += ["--model", ",".join(plan.models)]
    return command


def parity_phase(run) -> None:
    write_profile_plugin(run)
    html = (run.summary.get("deps") or {}).get("html_report", False)
    bench_reserve = run.args.bench_reserve if not run.plan.dry else 25
    budget = min(run.args.parity_timeout, run.remaining() - bench_reserve - 10)
    phase_deadline = time.monotonic() + max(budget, 20)
    runs = {}
    run.summary["parity"] = {"runs": runs, "profile": run.plan.profile}
    pending = list(run.plan.parity_backends)
    active: dict = {}
    while pending or active:
        while pending and len(active) < max(1, run.args.parity_jobs):
            backend = pending.pop(0)
            directory = run.out / "parity" / backend
            directory.mkdir(parents=True, exist_ok=True)
            command = pytest_command(run, backend, directory, html)
            handle = open(directory / "pytest.log", "w", encoding="utf-8")
            process = start_child(command, handle, run.env())
            run.children.add(process)
            active[backend] = (process, handle, time.monotonic(), command)
            run.log(f"parity: {backend} started (pid {process.pid}, until +"
                    f"{phase_deadline - run.started:.0f}s)")
        time.sleep(0.5)
        for backend, (process, handle, start, command) in list(active.items()):
            rc = process.poll()
            timed_out = False
            if rc is None and time.monotonic() > phase_deadline:
                kill_group(process)
                rc, timed_out = process.returncode, True
                handle.write(f"\n[gpu_smoke] killed at the parity phase deadline "
                             f"({time.monotonic() - start:.0f}s)\n")
            if rc is None:
                continue
            handle.close()
            del active[backend]
            run.children.discard(process)
            directory = run.out / "parity" / backend
            runs[backend] = {"rc": rc, "timed_out": timed_out, "seconds": round(time.monotonic() - start, 1),
                             "command": " ".join(command), "dir": str(directory)}
            records = read_jsonl(directory / "results.jsonl")
            tests = read_junit(directory / "junit.xml")
            if not tests:  # killed before pytest wrote its XML: the -v lines say what finished
                tests, running = read_log_outcomes(directory / "pytest.log")
                if running:
                    runs[backend]["running_when_stopped"] = running
            runs[backend]["records"] = len(records)
            runs[backend]["tests"] = count(t["outcome"] for t in tests)
            if rc not in (0, 1) or timed_out or (rc != 0 and not tests):
                runs[backend]["log_tail"] = tail((directory / "pytest.log").read_text(errors="replace"), 12)
                if not tests:
                    run.summary["problems"].append(f"parity {backend}: no test results (exit {rc}): "
                                                   + tail(runs[backend]["log_tail"], 3))
            run.log(f"parity: {backend} {'TIMED OUT' if timed_out else f'exit {rc}'} in "
                    f"{runs[backend]['seconds']}s; {len(records)} records; tests {runs[backend]['tests']}")
            summarise_parity(run)
            run.write_summary()
    summarise_parity(run)


def summarise_parity(run) -> None:
    """Test rows and worst errors from whatever every backend has written so far, finished or not."""
    parity = run.summary["parity"]
    records, tests = [], []
    for backend in run.plan.parity_backends:
        directory = run.out / "parity" / backend
        records += read_jsonl(directory / "results.jsonl")
        tests += read_junit(directory / "junit.xml") or read_log_outcomes(directory / "pytest.log")[0]
    parity["tests"] = tests_by_model_backend(tests, parity["runs"])
    parity["errors"] = worst_by_model_precision(records)
