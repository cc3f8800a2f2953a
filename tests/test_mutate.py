"""The mutation self-test (deploy_parity/mutate/): each operator makes a valid graph that
differs where it says; on zoo models the suite catches the live mutants and the localiser
names the changed node, never another."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from deploy_parity.backends import BACKENDS, onnx_for
from deploy_parity.localize import run_with_intermediates
from deploy_parity.mutate import OPERATORS, plant, self_test
from deploy_parity.registry import build_registry
from deploy_parity.strategies import export_size_example
from tests.suite_runs import run_python


def graph_and_values(pool, name):
    case = build_registry(wanted=[name]).get(name)
    example = export_size_example(case, pool.bounds(case, BACKENDS["onnxrt-cpu"]))
    model = onnx.load(str(onnx_for(case, case.deploy_target(example.height, example.width, example.dtypes),
                                   pool.context)))
    feed = pool.feed(case, example)
    return model, feed, {**feed, **run_with_intermediates(model, feed)}


def test_each_operator_makes_a_valid_graph_that_changes_the_output_where_it_says(module_pool):
    model, feed, values = graph_and_values(module_pool, "pose-rtmo")
    mutants = plant(model, values, per_operator=1)
    assert {m.operator for m in mutants} == set(OPERATORS)
    original = run_with_intermediates(model, feed, [])
    for mutant in mutants:
        onnx.checker.check_model(mutant.model)
        names = {n.name for n in mutant.model.graph.node}
        if mutant.operator == "drop-activation":
            assert mutant.node not in names
        else:
            assert mutant.node in names
        assert len(mutant.model.graph.node) - len(model.graph.node) in (-1, 0, 1)
        changed = run_with_intermediates(mutant.model, feed, [])
        assert set(changed) == set(original)
    assert model.SerializeToString() == graph_and_values(module_pool, "pose-rtmo")[0].SerializeToString()  # untouched


@pytest.mark.parametrize("name", ["pose-rtmo", "detr-tiny"])
def test_the_self_test_catches_and_localises_planted_changes(module_pool, tmp_path, name):
    case = build_registry(wanted=[name]).get(name)
    report = self_test(case, module_pool, examples=6, workdir=tmp_path, progress=lambda line: None)
    print(report.summary())
    assert report.live >= 6, report.summary()
    assert report.count("wrong") == 0, report.to_record()
    assert report.caught_fraction() >= 0.95, report.to_record()
    assert report.right_fraction() >= 0.90, report.to_record()
    for result in report.results:
        if result.outcome == "right":
            assert result.localisation.startswith("stage: the export breaks"), result.localisation


def test_the_command_refuses_an_unknown_operator_in_one_line(tmp_path):
    run = run_python("-m", "deploy_parity.mutate", "pose-rtmo", "--operators", "scale-weight,melt", "--out",
                     str(tmp_path), timeout=120)
    assert run.returncode == 2
    assert "--operators: unknown ['melt']" in run.stderr and "Traceback" not in run.stderr


def test_the_command_refuses_an_unknown_model_in_one_line(tmp_path):
    run = run_python("-m", "deploy_parity.mutate", "no-such-model", "--out", str(tmp_path), timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error:") and "no-such-model" in run.stderr and "Traceback" not in run.stderr
