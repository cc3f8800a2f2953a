"""tools/gpu_smoke.py: its dry run (CPU backends, tiny budget) proves the plumbing that
the one-shot run on a lent GPU machine depends on. Runs everywhere; nothing is skipped
without a GPU: the dry run is the point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tools.smoke import outcomes  # a module: pytest would collect tests_by_model_backend imported by name
from tools.smoke.wheels import wheel_compatible, wheel_requires, wheel_top_level, wheels_to_extract

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tools" / "gpu_smoke.py"


def test_dry_run_writes_summaries_with_per_model_rows(tmp_path):
    out = tmp_path / "smoke"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS_"))}
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), "--dry-run", "--deadline", "150"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "phase parity: ok" in done.stdout and "phase bench: ok" in done.stdout, done.stdout[-3000:]

    for name in ("summary.json", "summary.md", "stack.json", "deps.json", "progress.log", "bench/bench.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "dry-run"
    assert all(phase["status"] == "ok" for phase in summary["phases"].values()), summary["phases"]
    assert summary["stack"]["python"] == sys.version.split()[0]
    assert "torch" in summary["stack"]["modules"] and summary["stack"]["modules"]["torch"]["ok"]

    tests = summary["parity"]["tests"]
    assert [(row["model"], row["backend"], row["status"]) for row in tests] == [("pose-rtmo", "torch-cpu", "pass")]
    parity_rows = [g for g in summary["parity"]["errors"] if g["check"] == "parity"]
    assert [(g["model"], g["precision"]) for g in parity_rows] == [("pose-rtmo", "fp32")]
    metrics = parity_rows[0]["metrics"]
    assert metrics["worst kpt px"]["limit"] is not None and metrics["worst kpt px"]["value"] <= metrics["worst kpt px"]["limit"]
    assert (out / "parity" / "torch-cpu" / "results.jsonl").is_file()

    bench = json.loads((out / "bench" / "bench.json").read_text())["results"]
    assert {(r["model"], r["backend"]) for r in bench} == {("pose-rtmo", "torch-cpu"), ("pose-rtmo", "onnxrt-cpu")}
    assert all(r.get("error") is None and r["warm"]["median_ms"] > 0 for r in bench), bench

    markdown = (out / "summary.md").read_text()
    assert "| pose-rtmo | torch-cpu | pass |" in markdown
    assert "| pose-rtmo | onnxrt-cpu | fp32 |" in markdown


def test_wheel_tags_and_top_level_names(tmp_path):
    py312 = (3, 12)
    assert wheel_compatible(Path("pytest-9.2.0-py3-none-any.whl"), version=py312, machine="x86_64")
    assert wheel_compatible(
        Path("scipy-1.17.1-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"), version=py312,
        machine="x86_64") == sys.platform.startswith("linux")
    assert not wheel_compatible(
        Path("scipy-1.17.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"), version=py312,
        machine="x86_64")
    assert not wheel_compatible(Path("scipy-1.17.1-cp312-cp312-macosx_14_0_arm64.whl"), version=py312,
                                machine="x86_64")

    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("demo/__init__.py", "")
        archive.writestr("_demo_impl.py", "")
        archive.writestr("demo.libs/libx.so", "")
        archive.writestr("demo-1.0.dist-info/METADATA", "")
    assert wheel_top_level(wheel) == ["_demo_impl", "demo"]


def _wheel(directory: Path, name: str, modules: list, requires: list = ()) -> Path:
    path = directory / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for module in modules:
            archive.writestr(f"{module}/__init__.py", "")
        metadata = "Metadata-Version: 2.1\nName: {}\n".format(name) + "".join(f"Requires-Dist: {r}\n" for r in requires)
        archive.writestr(f"{name}-1.0.dist-info/METADATA", metadata + "\nlong description\nRequires-Dist: not-me\n")
    return path


def test_extracts_what_is_missing_and_what_it_needs_that_the_image_lacks(tmp_path):
    wheels = [(w, wheel_top_level(w)) for w in (
        _wheel(tmp_path, "pytest", ["pytest", "_pytest"],
               ["iniconfig>=2", "packaging>=24", "pluggy<2,>=1.6", 'colorama>=0.4; sys_platform == "win32"',
                'sphinx; extra == "docs"']),
        _wheel(tmp_path, "pluggy", ["pluggy"]),
        _wheel(tmp_path, "iniconfig", ["iniconfig"]),
        _wheel(tmp_path, "packaging", ["packaging"]),
        _wheel(tmp_path, "scipy", ["scipy"]),
    )]
    assert wheel_requires(wheels[0][0]) == ["iniconfig", "packaging", "pluggy", "colorama"]
    image_has = {"packaging"}  # onnxruntime brings it
    chosen = wheels_to_extract({"pytest"}, wheels, lambda name: name in image_has)
    assert [w.name.split("-")[0] for w, _ in chosen] == ["iniconfig", "pluggy", "pytest"]  # not packaging, not scipy
    assert wheels_to_extract(set(), wheels, lambda name: False) == []


def test_outcomes_from_a_pytest_log_cut_short(tmp_path):
    """A pytest killed at the deadline writes no JUnit XML; its -v lines still say what finished."""
    log = tmp_path / "pytest.log"
    log.write_text(
        "suites/test_parity.py::test_parity[pose-rtmo@torch-cuda-fp16] PASSED                [ 10%]\n"
        "suites/test_parity.py::test_batch_consistency[keypoint-rcnn@torch-cuda-fp16] SKIPPED (takes batch 1) [ 20%]\n"
        "suites/test_parity.py::test_parity[detr-tiny@torch-cuda-fp16] FAILED                [ 30%]\n"
        "suites/test_parity.py::test_determinism[detr-tiny@torch-cuda-fp16] \n"
        "[gpu_smoke] killed at the parity phase deadline (240s)\n")
    tests, running = outcomes.read_log_outcomes(log)
    assert [(t["test"], t["model"], t["outcome"]) for t in tests] == [
        ("test_parity", "pose-rtmo", "passed"), ("test_batch_consistency", "keypoint-rcnn", "skipped"),
        ("test_parity", "detr-tiny", "failed")]
    assert running == "test_determinism[detr-tiny@torch-cuda-fp16]"
    rows = outcomes.tests_by_model_backend(tests, {"torch-cuda-fp16": {"timed_out": True}})
    assert [(r["model"], r["status"]) for r in rows] == [
        ("detr-tiny", "FAIL (run timed out)"), ("keypoint-rcnn", "skipped (run timed out)"),
        ("pose-rtmo", "pass (run timed out)")]
