"""The three checks a suite runs per example: parity, batch consistency, determinism.

Running and judging are separate steps (Polygraphy's Comparator split): a check runs
the reference and the candidate, then hands both outputs to the comparators, and
returns a `CaseResult` that the report writers record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from deploy_parity.compare.case_outputs import compare_all_tensors, compare_case_outputs
from deploy_parity.compare.verdict import Comparison, Verdict, combine
from deploy_parity.errors import UnsupportedShapeError
from deploy_parity.inputs import make_feed, take_sample
from deploy_parity.strategies import ParityExample


@dataclass
class CaseResult:
    check: str  # "parity" | "batch" | "determinism"
    model: str
    backend: str
    precision: str
    example: ParityExample
    verdict: Verdict
    comparisons: list = field(default_factory=list)
    message: str = ""
    seconds: float = 0.0
    replay: str = ""  # the command that re-runs exactly this case
    accepted: dict = field(default_factory=dict)  # input -> shapes the candidate accepts

    def failures(self) -> list:
        return [c for c in self.comparisons if c.verdict == Verdict.FAIL]

    def summary(self) -> str:
        """The message a person reads when the case fails: the worst comparisons first."""
        order = {Verdict.FAIL: 0, Verdict.REFUSED: 1, Verdict.AMBIGUOUS: 2, Verdict.VACUOUS: 3, Verdict.PASS: 4}
        lines = [f"{self.check} {self.model} on {self.backend} ({self.precision}), {self.example.describe()}: "
                 f"{self.verdict.value}"]
        if self.message:
            lines.append(self.message)
        for comp in sorted(self.comparisons, key=lambda c: order[c.verdict])[:6]:
            if comp.verdict != Verdict.PASS:
                lines.append(f"  [{comp.verdict.value}] {comp.kind} {comp.output}: {comp.message}")
        if self.replay:
            lines.append(f"re-run exactly this case: {self.replay}")
        return "\n".join(lines)

    def to_record(self) -> dict:
        return {
            "check": self.check,
            "model": self.model,
            "backend": self.backend,
            "precision": self.precision,
            "height": self.example.height,
            "width": self.example.width,
            "batch": self.example.batch,
            "dtypes": list(self.example.dtypes),
            "seed": self.example.seed,
            "verdict": self.verdict.value,
            "message": self.message,
            "seconds": round(self.seconds, 4),
            "replay": self.replay,
            "accepted_shapes": self.accepted,
            "comparisons": [c.to_record() for c in self.comparisons],
        }


def _result(check, case, backend, example, comparisons, start, message="") -> CaseResult:
    return CaseResult(
        check=check,
        model=case.name,
        backend=backend.name,
        precision=backend.precision,
        example=example,
        verdict=combine(c.verdict for c in comparisons),
        comparisons=comparisons,
        message=message,
        seconds=time.perf_counter() - start,
    )


def _refused(check, case, backend, example, error, start) -> CaseResult:
    comparison = Comparison("contract", error.input_name, Verdict.REFUSED, message=str(error))
    return _result(check, case, backend, example, [comparison], start, message=str(error))


def feed_for(case, example: ParityExample) -> dict:
    return make_feed(case, example.height, example.width, example.batch, example.seed, example.dtypes)


def candidate_runner(pool, case, backend, example: ParityExample):
    return pool.get(case, backend, case.deploy_target(example.height, example.width, example.dtypes))


def accepted_shapes(runner) -> dict:
    return {name: f"{'|'.join(meta.dtypes)} {meta.describe_shape()}" for name, meta in runner.get_input_metadata().items()}


def check_parity(pool, case, backend, example: ParityExample) -> CaseResult:
    """Candidate backend against the eager PyTorch reference on one feed."""
    start = time.perf_counter()
    feed = feed_for(case, example)
    runner = candidate_runner(pool, case, backend, example)
    try:
        candidate = runner.infer(feed)
    except UnsupportedShapeError as error:
        result = _refused("parity", case, backend, example, error, start)
    else:
        reference = pool.reference(case).infer(feed)
        comparisons = compare_case_outputs(
            case, reference, candidate, backend=backend.name, precision=backend.precision,
            image_size=(example.height, example.width), batch=example.batch,
        )
        result = _result("parity", case, backend, example, comparisons, start)
    result.accepted = accepted_shapes(runner)
    return result


def check_refusal(pool, case, backend, example: ParityExample) -> CaseResult:
    """A shape outside what the candidate accepts must be refused with a clear message:
    neither a parity failure nor (worse) a pass. FAIL if the candidate runs it anyway."""
    start = time.perf_counter()
    feed = feed_for(case, example)
    runner = None
    try:
        # A per-size case refuses to build a graph for a size outside its space at all.
        runner = candidate_runner(pool, case, backend, example)
        runner.infer(feed)
    except UnsupportedShapeError as error:
        result = _refused("refusal", case, backend, example, error, start)
    else:
        comparison = Comparison("contract", case.input_names[0], Verdict.FAIL,
                                message=f"{example.describe()} lies outside the accepted shapes but was run")
        result = _result("refusal", case, backend, example, [comparison], start, message=comparison.message)
    result.accepted = accepted_shapes(runner) if runner is not None else {"sizes": case.sizes.describe()}
    return result


def check_batch_consistency(pool, case, backend, example: ParityExample) -> CaseResult:
    """Metamorphic: a batch of N different images equals the N images run one by one."""
    start = time.perf_counter()
    feed = feed_for(case, example)
    runner = candidate_runner(pool, case, backend, example)
    try:
        batched = runner.infer(feed)
        singles = [runner.infer(take_sample(feed, i)) for i in range(example.batch)]
    except UnsupportedShapeError as error:
        return _refused("batch", case, backend, example, error, start)
    comparisons = []
    for index, single in enumerate(singles):
        # Compare sample `index` of the batch with the batch-of-one run of that image.
        batched_sample = {name: value[index : index + 1] for name, value in batched.items()}
        comparisons += compare_case_outputs(
            case, single, batched_sample, backend=backend.name, precision=backend.precision,
            image_size=(example.height, example.width), batch=1, label=f"batch[{index}] vs alone",
        )
    return _result("batch", case, backend, example, comparisons, start)


def check_determinism(pool, case, backend, example: ParityExample) -> CaseResult:
    """The same backend run twice on the same feed gives bit-identical outputs."""
    start = time.perf_counter()
    feed = feed_for(case, example)
    runner = candidate_runner(pool, case, backend, example)
    try:
        first = runner.infer(feed)
        second = runner.infer(feed)
    except UnsupportedShapeError as error:
        return _refused("determinism", case, backend, example, error, start)
    comparisons = compare_all_tensors(case, first, second, kind="determinism", backend=backend.name,
                                      precision=backend.precision)
    return _result("determinism", case, backend, example, comparisons, start)


CHECKS = {"parity": check_parity, "batch": check_batch_consistency, "determinism": check_determinism}
