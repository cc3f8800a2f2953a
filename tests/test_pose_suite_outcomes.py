"""The spine's acceptance test: the suite catches bug class 1 and passes the fixed model.

Runs the real parity suite in a subprocess, as a user would.
"""

from __future__ import annotations

import re
import shlex

import pytest

from deploy_parity.backends import BACKENDS
from deploy_parity.check import check_parity
from deploy_parity.compare.verdict import Verdict
from deploy_parity.registry import build_registry
from deploy_parity.strategies import ParityExample
from tests.suite_runs import PARITY_ONLY, run_suite

pytestmark = pytest.mark.slow

FALSIFYING = re.compile(r"ParityExample\(height=(\d+), width=(\d+), batch=(\d+)")
KEYPOINT_ERROR = re.compile(r"keypoint \d+ \([a-z_]+\): ([\d.]+) px")


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    return run_suite(tmp_path_factory.mktemp("broken"), "--model", "pose-rtmo-broken", target=PARITY_ONLY)


def test_broken_pose_fails_with_shrunk_rectangular_counterexample(broken_run):
    assert broken_run.returncode == 1, broken_run.output[-3000:]
    sizes = FALSIFYING.findall(broken_run.output)
    assert sizes, "no shrunk falsifying example printed:\n" + broken_run.output[-3000:]
    for height, width, _batch in sizes:
        assert height != width, f"the counterexample should be rectangular, got {height}x{width}"
    errors = [float(px) for px in KEYPOINT_ERROR.findall(broken_run.output)]
    assert errors and max(errors) > 5.0, f"expected a keypoint error of many pixels, got {errors}"
    assert "re-run exactly this case: pytest" in broken_run.output


def test_printed_replay_command_reproduces_the_failure(broken_run, tmp_path):
    line = re.search(r"re-run exactly this case: (pytest .+)$", broken_run.output, re.MULTILINE).group(1)
    argv = shlex.split(line)
    nodeid, replay = argv[1], argv[argv.index("--replay") + 1]
    backend = argv[argv.index("--backend") + 1]
    again = run_suite(tmp_path, "--model", "pose-rtmo-broken", "--backend", backend, "--replay", replay,
                      target=nodeid)
    assert again.returncode == 1, again.output[-2000:]
    records = again.records()
    assert len(records) == 1  # exactly the one case, nothing else
    expected = ParityExample.parse(replay)
    assert (records[0]["height"], records[0]["width"], records[0]["batch"]) == (expected.height, expected.width,
                                                                                expected.batch)
    assert records[0]["verdict"] == "fail"
    assert "keypoint" in again.output and "px" in again.output


def test_replay_of_a_passing_case_passes(tmp_path):
    run = run_suite(tmp_path, "--model", "pose-rtmo", "--backend", "onnxrt-cpu",
                    "--replay", "h=64,w=96,batch=2,dtypes=uint8,seed=5", target=PARITY_ONLY)
    assert run.returncode == 0, run.output[-2000:]
    [record] = run.records()
    assert (record["height"], record["width"], record["batch"], record["dtypes"]) == (64, 96, 2, ["uint8"])
    assert record["verdict"] == "pass"


def test_fixed_pose_passes(tmp_path):
    run = run_suite(tmp_path, "--model", "pose-rtmo")
    assert run.returncode == 0, run.output[-3000:]
    records = run.records()
    assert {r["check"] for r in records} == {"coverage", "parity", "batch", "determinism", "refusal"}
    checked = [r for r in records if r["check"] != "refusal"]
    assert any(r["height"] != r["width"] for r in checked), "no rectangular size was tested"
    assert any(r["batch"] > 1 for r in checked), "no batch > 1 was tested"
    assert {tuple(r["dtypes"]) for r in checked} >= {("float32",), ("uint8",)}
    assert all(r["verdict"] == "pass" for r in checked)
    assert all(r["verdict"] == "refused" for r in records if r["check"] == "refusal")


@pytest.mark.parametrize("side", [64, 128, 192])
@pytest.mark.parametrize("backend", ["torch-cpu", "onnxrt-cpu"])
def test_broken_pose_passes_on_square_input(side, backend, pool):
    """The bug is invisible on a square input: that is why a square smoke test hid it."""
    case = build_registry().get("pose-rtmo-broken")
    for batch in (1, 2):
        result = check_parity(pool, case, BACKENDS[backend], ParityExample(side, side, batch, ("float32",), 3))
        assert result.verdict == Verdict.PASS, result.summary()
    rectangular = check_parity(pool, case, BACKENDS[backend], ParityExample(side, side + 32, 1, ("float32",), 3))
    assert rectangular.verdict == Verdict.FAIL


def test_batch_broken_pose_fails_only_with_batch_two_or_more(tmp_path):
    """Bug class 3: a gather that forgets the batch index is invisible at batch 1."""
    run = run_suite(tmp_path, "--model", "pose-rtmo-batch-broken", "--backend", "onnxrt-cpu")
    assert run.returncode == 1, run.output[-3000:]
    assert "test_batch_consistency[pose-rtmo-batch-broken@onnxrt-cpu] FAILED" in run.output or \
        "FAILED suites/test_parity.py::test_batch_consistency[pose-rtmo-batch-broken@onnxrt-cpu]" in run.output
    shrunk = [int(batch) for _h, _w, batch in FALSIFYING.findall(run.output)]
    assert shrunk and all(batch >= 2 for batch in shrunk), shrunk
    failing = [r for r in run.records() if r["verdict"] == "fail"]
    assert failing and all(r["batch"] >= 2 for r in failing)
    assert any(r["verdict"] == "pass" and r["batch"] == 1 for r in run.records() if r["check"] == "parity")
