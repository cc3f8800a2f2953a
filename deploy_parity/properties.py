"""Property runner: one Hypothesis property per (check, model case, backend).

Suites stay thin: they call `run_property`, which draws examples from the case's
bounds (always including the square control and the export size), runs the check,
records every case, and fails with the shrunk example and a command that re-runs
exactly that case. After all examples it fails the suite if too many were ambiguous
or vacuous: a suite that compared nothing proves nothing.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Callable, Optional

from hypothesis import example, given, note, target
from hypothesis.control import currently_in_test_context
from hypothesis import strategies as st

from deploy_parity.contracts.bounds import ShapeBounds
from deploy_parity.check import CHECKS, CaseResult
from deploy_parity.compare.tolerances import lookup
from deploy_parity.compare.verdict import ERROR_METRICS, Verdict
from deploy_parity.strategies import (
    EXPORT_SIZE,
    SQUARE_CONTROL,
    ParityExample,
    export_size_example,
    parity_examples,
    square_control,
)


class ParityFailure(AssertionError):
    """A checked case failed; the message holds the evidence and the replay command."""


@dataclass
class PropertyRun:
    check: str
    case: object
    backend: object
    pool: object
    bounds: ShapeBounds
    record: Callable[[CaseResult], None]
    nodeid: str
    extra_args: list = field(default_factory=list)  # e.g. --model-module, for the replay command
    replay: Optional[ParityExample] = None
    min_batch: int = 1
    results: list = field(default_factory=list)

    def replay_command(self, ex: ParityExample) -> str:
        args = ["pytest", self.nodeid, "--model", self.case.name, "--backend", self.backend.name,
                *self.extra_args, "--replay", ex.replay_arg()]
        return " ".join(shlex.quote(a) for a in args)

    def resolve(self, probe) -> ParityExample:
        if probe == SQUARE_CONTROL:
            ex = square_control(self.case, self.bounds)
        elif probe == EXPORT_SIZE:
            ex = export_size_example(self.case, self.bounds)
        else:
            ex = probe.draw(parity_examples(self.case, self.bounds, self.min_batch), label="example")
        if ex.batch < self.min_batch:
            ex = ParityExample(ex.height, ex.width, self.min_batch, ex.dtypes, ex.seed)
        return ex

    def check_one(self, ex: ParityExample) -> CaseResult:
        result = CHECKS[self.check](self.pool, self.case, self.backend, ex)
        result.replay = self.replay_command(ex)
        self.record(result)
        self.results.append(result)
        if currently_in_test_context():  # --replay runs the check outside Hypothesis
            note(f"case: {ex.describe()}")
            note(f"re-run exactly this case: {result.replay}")
            # Steer the search toward large errors, and toward instances lost altogether
            # (a total failure has no matched pair and so no pixel error to maximise).
            worst = worst_error(result)
            if worst is not None:
                target(worst, label="worst pixel/abs error")
            target(float(unmatched_instances(result)), label="unmatched instances")
        if result.verdict in (Verdict.ERROR, Verdict.FAIL, Verdict.REFUSED):
            raise ParityFailure(result.summary())
        return result

    def run(self) -> list:
        if self.replay is not None:
            self.check_one(self.replay)
        else:

            @given(probe=st.data())
            @example(probe=SQUARE_CONTROL)
            @example(probe=EXPORT_SIZE)
            def prop(probe):
                self.check_one(self.resolve(probe))

            prop()
        self.check_suite_fractions()
        return self.results

    def check_suite_fractions(self) -> None:
        if not self.results or self.replay is not None:
            return
        tol = lookup("suite", self.backend.name, self.backend.precision, self.case.tolerance_overrides, self.case.name)
        n = len(self.results)
        for verdict, key in ((Verdict.AMBIGUOUS, "max_ambiguous_fraction"), (Verdict.VACUOUS, "max_vacuous_fraction")):
            count = sum(r.verdict == verdict for r in self.results)
            if count / n > tol[key]:
                raise ParityFailure(
                    f"{self.check} {self.case.name} on {self.backend.name}: {count} of {n} cases were "
                    f"{verdict.value} (limit {tol[key]:.0%}, {tol.source}): the suite cannot vouch for this model"
                )


def unmatched_instances(result: CaseResult) -> int:
    return sum(int(c.metrics.get(key, 0)) for c in result.comparisons
               for key in ("n_unmatched_ref", "n_unmatched_cand"))


def worst_error(result: CaseResult) -> Optional[float]:
    values = [c.metrics[m] for c in result.comparisons for m in ERROR_METRICS
              if isinstance(c.metrics.get(m), (int, float)) and c.metrics[m] == c.metrics[m]]
    return float(max(values)) if values else None
