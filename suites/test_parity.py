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


def test_parity(parity_property, backend):
    """Candidate == reference over rectangular sizes, every declared dtype and batch sizes."""
    if backend.precision in JUDGED_BY_AGREEMENT:
        pytest.skip(f"{backend.name} ({backend.precision}) is judged by task agreement (test_task_agreement), whose "
                    "record carries the per-instance error distribution")
    parity_property("parity").run()


def test_batch_consistency(parity_property, model_case, backend, runner_pool):
    """A batch of N different images == each image run alone."""
    if backend.precision in JUDGED_BY_AGREEMENT:
        pytest.skip(f"{backend.name} ({backend.precision}): its batches are in test_task_agreement's evaluation set")
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


# Reduced precisions are accepted on what they do to the task, not per instance: an INT8
# graph moves boxes by pixels and flips boundary detections by design.
JUDGED_BY_AGREEMENT = ("int8",)


def test_task_agreement(model_case, backend, runner_pool, parity_recorder):
    """A reduced-precision backend keeps the task: the candidate scored with the task's own
    metric (box / keypoint / mask AP) against the reference's answers, over a fixed
    evaluation set of sizes and batches, within the tolerance table's budget."""
    from deploy_parity.check import check_agreement
    from deploy_parity.strategies import agreement_examples

    if backend.precision in ("fp32", "fp64"):
        pytest.skip(f"{backend.name} runs fp32: judged per instance (test_parity); task agreement is for the "
                    "reduced precisions")
    from deploy_parity.compare.tolerances import has_row

    if not has_row("agreement", backend.name, backend.precision):
        pytest.skip(f"no measured task-agreement budget for {backend.precision} yet (the tolerance table's "
                    "'agreement' rows): judged per instance by test_parity until a GPU run measures one")
    examples = agreement_examples(model_case, runner_pool.bounds(model_case, backend))
    result = check_agreement(runner_pool, model_case, backend, examples)
    parity_recorder.record(result)
    if result.verdict in (Verdict.FAIL, Verdict.ERROR, Verdict.VACUOUS):
        pytest.fail(result.summary(), pytrace=False)
