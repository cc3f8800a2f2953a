"""The smoke run itself: its output folder, deadline and log, the child processes it starts
(each under a timeout, killed with everything it started), the phases in order (a phase
that crashes never costs the next), summary.json and summary.md rewritten after every
phase, and a kill from outside answered by writing what there is."""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .bench import bench_phase, write_bench
from .deps import deps_phase
from .files import write_json
from .layout import REPO
from .parity import parity_phase, summarise_parity
from .plan import DEFAULT_ZOO, choose_plan
from .processes import kill_group, start_child
from .report import render_markdown
from .stack import stack_phase
from .wheels import usable_wheels


class SmokeRun:
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
        self.zoo = list(DEFAULT_ZOO)  # the registry's default models, once the deps phase has them
        self.plan = None  # plan.Plan, decided after the deps phase
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
        line = f"[{_dt.datetime.now().strftime('%H:%M:%S')} +{time.monotonic() - self.started:6.1f}s] {message}"
        print(line, flush=True)
        self.log_file.write(line + "\n")

    def env(self) -> dict:
        """The children's environment: the checkout, the extracted wheels and the profile
        plugin on PYTHONPATH; none of the caller's pytest or Hypothesis settings."""
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
            process = start_child(command, handle, self.env())
            self.children.add(process)
            try:
                rc = process.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                kill_group(process)
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
            kill_group(process)
            self.children.discard(process)

    def on_signal(self, number, frame) -> None:
        """Killed from outside (the device tool's own limit): stop the children, keep what we have."""
        self.log(f"signal {number}: stopping the children and writing what there is")
        self.kill_children()
        self.summary["problems"].append(f"stopped by signal {number} after {time.monotonic() - self.started:.0f}s")
        try:
            if self.summary.get("parity"):
                summarise_parity(self)  # the records written so far (JSON lines are flushed per case)
            if self.summary.get("bench"):
                write_bench(self)
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

    def wheels_dir(self) -> Path:
        return (REPO / self.args.wheels) if not Path(self.args.wheels).is_absolute() else Path(self.args.wheels)

    def wheels(self) -> list:
        """[(wheel, top-level names)] for the wheels in the wheels dir this interpreter can use."""
        return usable_wheels(self.wheels_dir(), self.summary["problems"])

    def write_summary(self) -> None:
        self.summary["elapsed_seconds"] = round(time.monotonic() - self.started, 1)
        try:
            write_json(self.out / "summary.json", self.summary)
            (self.out / "summary.md").write_text(render_markdown(self.summary))
        except Exception as error:  # noqa: BLE001
            self.log(f"summary not written: {type(error).__name__}: {error}")

    # ---------------------------------------------------------------- the run

    def run(self) -> int:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, self.on_signal)
        self.log(f"gpu_smoke: output {self.out}; deadline {self.args.deadline:.0f}s; repo {REPO}")
        self.phase("stack", stack_phase, self)
        self.phase("deps", deps_phase, self)
        self.plan = choose_plan(self)
        self.phase("parity", parity_phase, self)
        self.phase("bench", bench_phase, self)
        self.write_summary()
        self.log(f"done in {time.monotonic() - self.started:.0f}s: {self.out / 'summary.md'}")
        print(render_markdown(self.summary, brief=True), flush=True)
        shutil.rmtree(self.work, ignore_errors=True)
        parity = self.summary.get("parity") or {}
        return 0 if parity.get("runs") and all(not r["timed_out"] and r["rc"] in (0, 1) and r.get("tests")
                                                for r in parity["runs"].values()) else 1
