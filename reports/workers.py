"""Parallel runs with pytest-xdist: who runs which model, which GPU, and the merge.

- Scheduling: every test of one model case goes to the same worker, so each export,
  session and engine of that model is built once (ModelGroupScheduling). Grouping by
  the test id rather than with xdist_group markers, because loadgroup appends
  "@group" to marked tests' node ids, and the replay command printed for a failure
  would then name a test that does not exist outside xdist.
- GPUs: on a machine with several GPUs, worker gwN sees only GPU N mod count
  (CUDA_VISIBLE_DEVICES, set in the worker before anything initialises CUDA).
- Reports: each worker writes its own JSONL under <reports dir>/<worker id>/; the
  controller concatenates them into <reports dir>/results.jsonl at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from reports.jsonl import read_jsonl

_WORKER_INDEX = re.compile(r"^gw(\d+)$")


GROUPINGS = ("model", "model-backend")


def case_of_test(nodeid: str, models=None) -> Optional[tuple]:
    """(model case, backend or None) of a parity test: '...::test_x[pose-rtmo@onnxrt-cpu]'.

    The ids come from fixtures/selection.py ("{case}@{backend}", or just "{case}").
    None for tests not parametrized by a model case: no id, or (when `models`, the
    registry's case names, is given) an id that names no model case.
    """
    match = re.search(r"\[([^\[\]]+)\]$", nodeid)
    if not match:
        return None
    model, _, backend = match.group(1).partition("@")
    if not model or (models is not None and model not in models):
        return None
    return model, backend or None


def scheduling_scope(nodeid: str, group_by: str = "model", models=None) -> str:
    """The unit a worker takes whole. An explicit xdist_group mark wins; else

    model          every test of a model case (each export and engine built once);
    model-backend  every test of a (model case, backend): more parallelism for a run of
                   one model, but two backends built from the same ONNX export (say
                   onnxrt-cuda and trt-fp16) may each export it, on different workers.
    """
    if nodeid.rfind("@") > nodeid.rfind("]"):  # loadgroup's "@group" suffix, as xdist does
        return nodeid.rsplit("@", 1)[-1]
    case = case_of_test(nodeid, models)
    if case is None:
        return nodeid
    model, backend = case
    return f"model:{model}" if group_by == "model" or backend is None else f"model:{model}@{backend}"


def make_model_group_scheduler(config, log, group_by: str = "model", models=None):
    """A LoadScopeScheduling whose scope is the model case (imported only when xdist runs)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModelGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scheduling_scope(nodeid, group_by, models)

    return ModelGroupScheduling(config, log)


def threads_per_worker(workers: int, cpus: Optional[int] = None) -> int:
    """CPU threads each of `workers` workers may use without oversubscribing the machine.

    torch's default is one thread per core in every process; two workers on two cores
    then run four spinning OpenMP threads, and a 7 ms forward pass takes hundreds of ms.
    """
    cpus = cpus or os.cpu_count() or 1
    return max(1, cpus // max(1, workers))


# ------------------------------------------------------------------------- GPUs


def visible_gpus(environ=os.environ) -> list:
    """The GPUs this process may hand out: CUDA_VISIBLE_DEVICES if set, else every GPU
    nvidia-smi lists (none on a machine without NVIDIA's driver)."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        value = environ["CUDA_VISIBLE_DEVICES"].strip()
        if value in ("", "-1"):
            return []
        return [d.strip() for d in value.split(",") if d.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def gpu_for_worker(worker_id: str, gpus: list) -> Optional[str]:
    """The GPU worker `worker_id` ('gw0', 'gw1', ...) gets: round robin over `gpus`.

    More workers than GPUs share them round robin (gw2 on a 2-GPU machine gets GPU 0).
    """
    match = _WORKER_INDEX.match(worker_id or "")
    if not match or not gpus:
        return None
    return gpus[int(match.group(1)) % len(gpus)]


# ---------------------------------------------------------------------- merging


def worker_results_path(reports_dir: Path, worker_id: str) -> Path:
    return Path(reports_dir) / worker_id / "results.jsonl"


def merge_worker_results(paths, merged: Path) -> list:
    """Concatenate the workers' JSONL files into `merged`; returns the records.

    Only the files of this run's workers are passed in: directories left by an earlier
    run with more workers are not read.
    """
    records = []
    for path in paths:
        if Path(path).is_file():
            records += read_jsonl(path)
    merged = Path(merged)
    merged.parent.mkdir(parents=True, exist_ok=True)
    tmp = merged.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    os.replace(tmp, merged)
    return records
