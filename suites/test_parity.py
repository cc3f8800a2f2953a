"""Parity suites, per model case x backend. The reference is the eager PyTorch model.

Thin on purpose: the checks, strategies and comparators live in deploy_parity.
"""

from __future__ import annotations

import pytest

from deploy_parity.check import check_coverage, check_refusal
from deploy_parity.compare.verdict import Verdict
from deploy_parity.strategies import refusal_examples


def test_artifact_covers_declared_inputs(model_case, backend, runner_pool, parity_recorder):
    """First: the artifact takes every size, batch size and dtype the case declares (else
    the properties below could only test what it takes), and every declared output is
    compared by something (one reference and one candidate run at the export size)."""
    result = check_coverage(runner_pool, model_case, backend)
    parity_recorder.record(result)
    if result.verdict != Verdict.PASS:
        pytest.fail(result.message, pytrace=False)


def test_parity(parity_property):
    """Candidate == reference over rectangular sizes, every declared dtype and batch sizes."""
    parity_property("parity").run()


def test_batch_consistency(parity_property, model_case, backend, runner_pool):
    """A batch of N different images == each image run alone."""
    if runner_pool.bounds(model_case, backend).max_batch < 2:
        pytest.skip(f"{model_case.name} on {backend.name} takes batch 1 only; "
                    "test_refuses_shapes_outside_what_it_accepts checks batch 2 is refused")
    parity_property("batch", min_batch=2).run()


def test_refuses_shapes_outside_what_it_accepts(parity_property, model_case, backend, runner_pool, parity_recorder):
    """Batch beyond the limit and sizes outside the artifact's accepted shapes are refused
    with a message naming the input: never a parity failure, never a pass."""
    bounds = runner_pool.bounds(model_case, backend)
    for example in refusal_examples(model_case, bounds):
        result = check_refusal(runner_pool, model_case, backend, example)
        parity_recorder.record(result)
        assert result.verdict == Verdict.REFUSED, result.summary()


def test_determinism(parity_property):
    """The same backend on the same input twice gives bit-identical outputs."""
    parity_property("determinism").run()
