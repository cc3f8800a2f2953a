"""Property runner: one Hypothesis property per (check, model case, backend).

Suites stay thin: they call `run_property`, which draws examples from the case's
bounds (always including the square control and the export size), runs the check,
records every case, and fails with the shrunk example and a command that re-runs
exactly that case. After all examples it fails the suite if too many were ambiguous
or vacuous: a suite that compared nothing proves nothing.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Callable, Optional

from hypothesis import example, given, note, seed, settings, target
from hypothesis.control import currently_in_test_context

from deploy_parity.contracts.bounds import ShapeBounds
from deploy_parity.check import CHECKS, CaseResult
from deploy_parity.compare.verdict import ERROR_METRICS, Verdict
from deploy_parity.strategies import ParityExample, export_size_example, parity_examples, square_control


# Time limit of one failure's localisation (once per failing test, on its final example).
LOCALISE_SECONDS = 120.0

# A derandomized profile (ci) draws from this seed. Hypothesis's own would be a hash of the
# property function's source, so any edit of the harness's code around it would change
# which examples CI checks, and a before/after comparison of verdicts would compare other
# cases. The value is the hash the property function had until it was rewritten with
# @given(parity_examples(...)) (issue 23), so CI checks the same examples as before it.
DERANDOMIZED_SEED = int(
    "1091184226825033913005492706768808901650488664921390809774057677702853348696546866287504485955655301518462892"
    "8344715")


class ParityFailure(AssertionError):
    """A checked case failed; the message holds the evidence and the replay command."""


class _StopProperty(BaseException):
    """A case timed out: stop the property at once. A BaseException, so Hypothesis does
    not catch it to shrink (every shrink step would wait out the time limit again)."""

    def __init__(self, summary: str):
        super().__init__(summary)
        self.summary = summary


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
    localise: bool = True  # attribute a failure to a stage and a layer (off: --no-localise)

    def replay_command(self, ex: ParityExample) -> str:
        args = ["pytest", self.nodeid, "--model", self.case.name, "--backend", self.backend.name,
                *self.extra_args, "--replay", ex.replay_arg()]
        return " ".join(shlex.quote(a) for a in args)

    def controls(self) -> list:
        """The explicit examples every property runs first: the square, batch-1 control that
        hid all five bug classes, and the export size (at the property's least batch)."""
        return [self.at_least_batch(ex) for ex in (square_control(self.case, self.bounds),
                                                    export_size_example(self.case, self.bounds))]

    def at_least_batch(self, ex: ParityExample) -> ParityExample:
        if ex.batch >= self.min_batch:
            return ex
        return ParityExample(ex.height, ex.width, self.min_batch, ex.dtypes, ex.seed)

    def check_one(self, ex: ParityExample) -> CaseResult:
        result = CHECKS[self.check](self.pool, self.case, self.backend, ex)
        result.replay = self.replay_command(ex)
        if result.verdict == Verdict.FAIL and self.check == "parity" and _final_example():
            self.diagnose(result)
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
        if result.verdict == Verdict.TIMEOUT:
            raise _StopProperty(result.summary())
        if result.verdict in (Verdict.ERROR, Verdict.FAIL, Verdict.REFUSED):
            raise ParityFailure(result.summary() + self.diagnosis_text(result))
        return result

    def diagnose(self, result: CaseResult) -> None:
        """Once per failing test, on its final (shrunk) example: the most severe failing
        example seen beside it, and where the failure breaks (stage, first divergent
        layer). Off with PARITY_LOCALISE=0."""
        severe = max((r for r in self.results if r.verdict == Verdict.FAIL), key=lambda r: worst_error(r) or 0.0,
                     default=None)
        if severe is not None and (worst_error(severe) or 0.0) > (worst_error(result) or 0.0):
            result.most_severe = {"example": severe.example.describe(), "worst_error": worst_error(severe),
                                  "replay": severe.replay}
        if not self.localise or os.environ.get("PARITY_LOCALISE", "1").strip().lower() in ("0", "off", "false", "no"):
            return
        from deploy_parity.compare.case_outputs import compare_case_outputs
        from deploy_parity.compare.verdict import combine
        from deploy_parity.localize import localise

        ex = result.example

        from deploy_parity.compare.judge import Judge

        judges = {}

        def agrees(left, right, backend, precision) -> bool:
            # Every link is judged like parity: its precision's noise floor on this example
            # (a stage that differs by the model's own rounding agrees), no robustness verdict.
            key = (backend, precision)
            if key not in judges:
                judges[key] = Judge.for_case(self.case, backend, precision)
            judge = judges[key]
            noise = self.pool.noise(self.case, ex, judge).limits_only()
            comparisons = compare_case_outputs(self.case, left, right, judge=judge, noise=noise,
                                               image_size=(ex.height, ex.width), batch=ex.batch)
            return combine(c.verdict for c in comparisons) not in (Verdict.FAIL, Verdict.ERROR)

        from deploy_parity.watchdog import CaseTimeout, time_limit

        try:  # bounded: a diagnosis must never cost more than the run it explains
            with time_limit(LOCALISE_SECONDS, f"localising {self.case.name} on {self.backend.name}"):
                result.localisation = localise(self.pool, self.case, self.backend, ex, agrees)
        except CaseTimeout:
            from deploy_parity.localize import Localisation

            result.localisation = Localisation(note=f"localisation stopped after its {LOCALISE_SECONDS:g} s limit",
                                               seconds=LOCALISE_SECONDS)

    @staticmethod
    def diagnosis_text(result: CaseResult) -> str:
        lines = []
        if result.most_severe:
            severe = result.most_severe
            lines.append(f"smallest failing example above; the most severe seen: {severe['example']}, worst error "
                         f"{severe['worst_error']:.3g} (here {worst_error(result) or 0.0:.3g}); re-run it: "
                         f"{severe['replay']}")
        if result.localisation is not None:
            lines.append(result.localisation.describe())
        return ("\n" + "\n".join(lines)) if lines else ""

    def run(self) -> list:
        try:
            if self.replay is not None:
                self.check_one(self.replay)
            else:
                square, export_size = self.controls()

                @given(drawn=parity_examples(self.case, self.bounds, self.min_batch))
                @example(drawn=square)
                @example(drawn=export_size)
                def prop(drawn):
                    self.check_one(drawn)

                if settings.default.derandomize:
                    prop = seed(DERANDOMIZED_SEED)(prop)
                prop()
        except _StopProperty as stop:
            raise ParityFailure(f"{stop.summary}\n(the property stopped here: a case that times out is not "
                                "shrunk, each attempt would wait out the limit again)") from None
        self.check_suite_fractions()
        return self.results

    def check_suite_fractions(self) -> None:
        if not self.results or self.replay is not None:
            return
        tol = self.pool.judge(self.case, self.backend).row("suite")
        n = len(self.results)
        for verdict, key in ((Verdict.AMBIGUOUS, "max_ambiguous_fraction"), (Verdict.VACUOUS, "max_vacuous_fraction")):
            count = sum(r.verdict == verdict for r in self.results)
            if count / n > tol[key]:
                raise ParityFailure(
                    f"{self.check} {self.case.name} on {self.backend.name}: {count} of {n} cases were "
                    f"{verdict.value} (limit {tol[key]:.0%}, {tol.source}): the suite cannot vouch for this model"
                    + (VACUOUS_HINT if verdict == Verdict.VACUOUS else AMBIGUOUS_HINT)
                )


VACUOUS_HINT = (
    ". The reference found nothing to compare on those feeds: give the case a feed with objects the model "
    "detects (make_feed=deploy_parity.scene_feed(inputs) renders people, blocks and discs) or, for the test, a lower "
    "score threshold (judging=Judging(score_threshold=...))")
AMBIGUOUS_HINT = (
    ". Each ambiguous record names the decision boundary the reference sat on (a score at the threshold or a "
    "top-k cut, an NMS tie, a tied heatmap peak, a float32 / float64 knife edge); feeds with fewer near-ties, or a "
    "score threshold away from the scores the model gives, make the cases decisive")


def _final_example() -> bool:
    """True on Hypothesis's final run of the minimal failing example (and in --replay,
    which runs one example outside Hypothesis): the one run worth a diagnosis."""
    if not currently_in_test_context():
        return True
    from hypothesis.control import current_build_context

    return bool(getattr(current_build_context(), "is_final", False))


def unmatched_instances(result: CaseResult) -> int:
    return sum(int(c.metrics.get(key, 0)) for c in result.comparisons
               for key in ("n_unmatched_ref", "n_unmatched_cand"))


def worst_error(result: CaseResult) -> Optional[float]:
    values = [c.metrics[m] for c in result.comparisons for m in ERROR_METRICS
              if isinstance(c.metrics.get(m), (int, float)) and c.metrics[m] == c.metrics[m]]
    return float(max(values)) if values else None
