"""The export cache: a second run exports nothing; any change to a key part re-exports."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from deploy_parity.export import onnx_exporter
from deploy_parity.export.onnx_exporter import ExportOptions, export_key, export_onnx
from deploy_parity.errors import HarnessError
from deploy_parity.registry import build_registry
from tests.suite_runs import PARITY_ONLY, run_suite


@pytest.fixture(scope="module")
def pose():
    return build_registry().get("pose-rtmo")


def test_second_export_is_a_cache_hit(pose, tmp_path):
    target = pose.deploy_target(64, 96, ("float32",))
    before = onnx_exporter.STATS.exports
    first = export_onnx(pose, target, cache_dir=tmp_path)
    assert onnx_exporter.STATS.exports == before + 1
    hits = onnx_exporter.STATS.cache_hits
    second = export_onnx(pose, target, cache_dir=tmp_path)
    assert second == first
    assert onnx_exporter.STATS.exports == before + 1
    assert onnx_exporter.STATS.cache_hits == hits + 1
    assert first.with_suffix(".json").is_file()  # the sidecar says what the graph is


def test_key_changes_with_every_part(pose):
    target = pose.deploy_target(64, 96, ("float32",))
    module = pose.build_deploy(target)
    base = export_key(pose, target, ExportOptions(), module)
    assert export_key(pose, pose.deploy_target(64, 128, ("float32",)), ExportOptions(), module) != base
    assert export_key(pose, pose.deploy_target(64, 96, ("uint8",)), ExportOptions(), module) != base
    assert export_key(pose, target, ExportOptions(opset=18), module) != base
    assert export_key(pose, target, ExportOptions(exporter="dynamo"), module) != base
    with torch.no_grad():
        next(module.parameters()).add_(1e-3)  # different weights
    assert export_key(pose, target, ExportOptions(), module) != base
    assert export_key(replace(pose, name="other"), target, ExportOptions(), pose.build_deploy(target)) != base


def test_old_opset_and_unknown_exporter_are_refused():
    with pytest.raises(HarnessError, match="opset 11 < 17"):
        ExportOptions(opset=11)
    with pytest.raises(HarnessError, match="unknown exporter"):
        ExportOptions(exporter="tf2onnx")


@pytest.mark.slow
def test_second_suite_run_exports_nothing(tmp_path):
    cache = tmp_path / "shared-cache"
    args = ("--model", "pose-rtmo", "--backend", "onnxrt-cpu")
    first = run_suite(tmp_path, *args, cache_dir=cache, target=PARITY_ONLY)
    assert first.returncode == 0, first.output[-2000:]
    assert first.run_summary["exports"] > 0
    second = run_suite(tmp_path, *args, cache_dir=cache, target=PARITY_ONLY)
    assert second.returncode == 0, second.output[-2000:]
    assert second.run_summary["exports"] == 0
    assert second.run_summary["export_cache_hits"] >= first.run_summary["exports"]


def test_torch_export_based_exporter_matches_torchscript(pose, tmp_path):
    """--exporter dynamo (torch.export) gives the same answers as the TorchScript exporter."""
    from deploy_parity.compare.tensors import compare_tensors
    from deploy_parity.compare.tolerances import lookup
    from deploy_parity.compare.verdict import Verdict
    from deploy_parity.inputs import make_feed
    from deploy_parity.backends.onnxruntime.runner import OnnxRuntimeRunner

    target = pose.deploy_target(64, 96, ("float32",))
    feed = make_feed(pose, 64, 96, 2, seed=0)
    outputs = []
    for exporter in ("torchscript", "dynamo"):
        path = export_onnx(pose, target, ExportOptions(exporter=exporter), cache_dir=tmp_path)
        with OnnxRuntimeRunner(exporter, path, output_names=pose.output_names) as runner:
            outputs.append(runner.infer(feed))
    tol = lookup("tensor", "onnxrt-cpu", "fp32")  # two exports of one model: rounding only
    for name in pose.output_names:
        result = compare_tensors(outputs[0][name], outputs[1][name], tol, name)
        assert result.verdict == Verdict.PASS, result.message
