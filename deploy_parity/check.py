"""The three checks a suite runs per example: parity, batch consistency, determinism.

Running and judging are separate steps (Polygraphy's Comparator split): a check runs
the reference and the candidate, then hands both outputs to the comparators, and
returns a `CaseResult` that the report writers record.

Every check returns a result, whatever happens inside it: a shape the artifact cannot
take is REFUSED, and any other exception (a backend error, an input contract the
artifact breaks, a crash in the case's own to_instances) is an ERROR result carrying the
exception, so it is recorded and reported like any verdict, never lost. A check that runs
past the per-case time limit (the pool's context.case_timeout, --case-timeout) is
interrupted and becomes a TIMEOUT result (deploy_parity/watchdog.py says how, and what
cannot be interrupted).
"""

from __future__ import annotations

import functools
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Optional

from deploy_parity.contracts.bounds import coverage_gaps, describe_coverage_gaps
from deploy_parity.compare.case_outputs import check_outputs_compared, compare_all_tensors, compare_case_outputs
from deploy_parity.compare.verdict import SEVERITY, Comparison, Verdict, combine, side_names
from deploy_parity.errors import HarnessError, UnsupportedShapeError
from deploy_parity.inputs import make_feed, take_sample
from deploy_parity.strategies import ParityExample, export_size_example
from deploy_parity.watchdog import CaseTimeout, time_limit


@dataclass
class CaseResult:
    check: str  # "coverage" | "parity" | "batch" | "determinism" | "refusal"
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
    # Where a provider that partitions the graph ran it (onnxrt-trt: TensorRT's partitions
    # and what fell back where), when the candidate measured it; "" otherwise.
    placement: str = ""
    # Where a failing parity case breaks (deploy_parity/localize/), on the final shrunk
    # example of a failing test only; and the most severe failing example seen beside it.
    localisation: Optional[object] = None
    most_severe: Optional[dict] = None
    # The two answers compared, for the report's picture of a failing or ambiguous case
    # (never written to the records; the recorder keeps a bounded number of them).
    kept: Optional["KeptAnswers"] = None

    def failures(self) -> list:
        return [c for c in self.comparisons if c.verdict == Verdict.FAIL]

    def summary(self) -> str:
        """The message a person reads when the case fails: the worst comparisons first."""
        order = {verdict: -severity for verdict, severity in SEVERITY.items()}
        lines = [f"{self.check} {self.model} on {self.backend} ({self.precision}), {self.example.describe()}: "
                 f"{self.verdict.value}"]
        if self.message:
            lines.append(self.message)
        for comp in sorted(self.comparisons, key=lambda c: order[c.verdict])[:6]:
            if comp.verdict != Verdict.PASS and comp.message != self.message:
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
            **({"placement": self.placement} if self.placement else {}),
            **({"localisation": self.localisation.to_record()} if self.localisation is not None else {}),
            **({"most_severe": self.most_severe} if self.most_severe else {}),
            "comparisons": [c.to_record() for c in self.comparisons],
        }


@dataclass
class KeptAnswers:
    """What a check compared, as it ran: the feed and both sides' outputs (whole batch).

    For the batch check `first` is the list of single-image runs, one per sample. The
    report draws its pictures from these instead of running the case a second time.
    """

    check: str
    feed: dict
    first: object
    second: dict


def _finish(result: CaseResult, runner, kept: tuple = ()) -> CaseResult:
    """A check's result, completed: where the candidate's graph ran, and `kept`, the answers
    compared (feed, first, second), attached when a picture may be drawn of the case
    (failing or ambiguous)."""
    result.placement = placement_note(runner)
    if kept and result.verdict in (Verdict.FAIL, Verdict.AMBIGUOUS):
        result.kept = KeptAnswers(result.check, *kept)
    return result


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


def _where(error: BaseException) -> str:
    """file:line in function where `error` was raised, preferring the innermost frame of
    the user's or the harness's code over a library's (numpy, torch, onnxruntime)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    prefixes = tuple(os.path.join(p, "") for p in {sys.prefix, sys.base_prefix} if p)

    def library(filename: str) -> bool:
        return filename.startswith(prefixes) or "site-packages" in filename or "dist-packages" in filename

    own = [f for f in frames if not library(f.filename)]
    frame = (own or frames)[-1]
    return f"{os.path.basename(frame.filename)}:{frame.lineno} in {frame.name}"


def _errored(check, case, backend, example, error: Exception, start) -> CaseResult:
    """The check raised: an ERROR result with the exception's type, message and origin."""
    text = f"{type(error).__name__}: {error}"
    # The harness's own errors say what is wrong; for anything else (the case's code,
    # a backend library) where it was raised is half the story.
    where = "" if isinstance(error, HarnessError) else _where(error)
    if where:
        text += f" (raised at {where})"
    evidence = {"exception": type(error).__name__,
                "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__, limit=-8))}
    comparison = Comparison("error", check, Verdict.ERROR, message=text, evidence=evidence)
    return _result(check, case, backend, example, [comparison], start, message=text)


def _timed_out(check, case, backend, example, error: CaseTimeout, start) -> CaseResult:
    """The check ran past its time limit: a TIMEOUT result naming the limit and where it stopped."""
    text = f"TIMEOUT: {error.describe()}"
    evidence = {"seconds": error.seconds, "where": error.where}
    comparison = Comparison("timeout", check, Verdict.TIMEOUT, message=text, evidence=evidence)
    return _result(check, case, backend, example, [comparison], start, message=text)


def case_time_limit(pool, check: str, case, backend):
    """The per-case watchdog for one check (the pool's context says how long; None: none)."""
    seconds = getattr(getattr(pool, "context", None), "case_timeout", None)
    return time_limit(seconds, f"{check} {case.name} on {backend.name}")


def recorded(check: str):
    """Decorator for a check: every outcome becomes a CaseResult. UnsupportedShapeError
    (the artifact or the case cannot take this shape) is REFUSED wherever it is raised;
    running past the time limit is TIMEOUT; any other Exception is ERROR.
    KeyboardInterrupt and SystemExit are not Exceptions: they still stop the run."""

    def wrap(function):
        @functools.wraps(function)
        def run(pool, case, backend, example: ParityExample) -> CaseResult:
            start = time.perf_counter()
            try:
                with case_time_limit(pool, check, case, backend):
                    return function(pool, case, backend, example)
            except CaseTimeout as error:
                return _timed_out(check, case, backend, example, error, start)
            except UnsupportedShapeError as error:
                return _refused(check, case, backend, example, error, start)
            except Exception as error:  # noqa: BLE001 - recorded as an ERROR verdict, with the exception
                return _errored(check, case, backend, example, error, start)

        return run

    return wrap


def feed_for(case, example: ParityExample, pool=None) -> dict:
    """The example's feed: the pool's shared copy (rendered once per example) when there is a pool."""
    if pool is not None:
        return pool.feed(case, example)
    return make_feed(case, example.height, example.width, example.batch, example.seed, example.dtypes)


class comparing:
    """Times the comparators into the pool's compare_seconds (the overhead report's compare phase)."""

    def __init__(self, pool):
        self.pool = pool

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.pool.compare_seconds += time.perf_counter() - self.start


def knife_edges_inside(pool, case, example, judge, noise, reference, comparisons) -> list:
    """Where a structured comparison still fails at fp32, ask whether the reference itself
    is on a knife edge: its own answer under an input change the size of two runtimes'
    resize rounding (the "noise" row's input_jitter). Runs only on failure."""
    from deploy_parity.compare.noise import STRUCTURED_KINDS, excuse_input_knife_edges

    jitter = judge.row("noise").values.get("input_jitter")
    failing = [c for c in comparisons if c.verdict == Verdict.FAIL and c.kind in STRUCTURED_KINDS]
    if not jitter or not failing or not noise.measured or noise.precision != "fp32":
        return comparisons
    runs = []
    with comparing(pool), side_names("reference", "reference on the jittered feed"):
        for moved in pool.jittered(case, example, float(jitter)):
            runs.append(compare_case_outputs(case, reference, moved, judge=judge, noise=noise.limits_only(),
                                             image_size=(example.height, example.width), batch=example.batch))
    return excuse_input_knife_edges(comparisons, runs, float(jitter))


def self_comparison(case, backend) -> str:
    """What a parity check of torch-cpu compares when the case has no deploy builder."""
    if backend.artifact == "torch" and case.deploy_is_reference:
        return (f"self-comparison: {case.name} has no build_deploy, so {backend.name} runs a second build of the "
                "reference itself; this checks the reference is deterministic and batch-consistent, not an export")
    return ""


def candidate_runner(pool, case, backend, example: ParityExample):
    return pool.get(case, backend, case.deploy_target(example.height, example.width, example.dtypes))


def _begin_on_candidate(pool, case, backend, example: ParityExample) -> tuple:
    """How a check that runs the candidate on one example begins: its clock, the example's
    feed and the candidate's runner for the example's shape."""
    return time.perf_counter(), feed_for(case, example, pool), candidate_runner(pool, case, backend, example)


def accepted_shapes(runner) -> dict:
    return {name: f"{'|'.join(meta.dtypes)} {meta.describe_shape()}" for name, meta in runner.get_input_metadata().items()}


def placement_note(runner) -> str:
    """The runner's one line on where its graph ran (OnnxRuntimeRunner.placement_note), or ""."""
    return getattr(runner, "placement_note", "")


@recorded("parity")
def check_parity(pool, case, backend, example: ParityExample) -> CaseResult:
    """Candidate backend against the eager PyTorch reference on one feed."""
    start, feed, runner = _begin_on_candidate(pool, case, backend, example)
    try:
        candidate = runner.infer(feed)
    except UnsupportedShapeError as error:
        # Caught here rather than by @recorded: a refused example still records the shapes
        # the candidate accepts.
        result, kept = _refused("parity", case, backend, example, error, start), ()
    else:
        reference = pool.answers(case, example).outputs
        judge = pool.judge(case, backend)
        noise = pool.noise(case, example, judge)
        with comparing(pool):
            comparisons = compare_case_outputs(
                case, reference, candidate, judge=judge, noise=noise,
                image_size=(example.height, example.width), batch=example.batch,
            )
        comparisons = knife_edges_inside(pool, case, example, judge, noise, reference, comparisons)
        result = _result("parity", case, backend, example, comparisons, start, message=self_comparison(case, backend))
        kept = (feed, reference, candidate)
    result.accepted = accepted_shapes(runner)
    return _finish(result, runner, kept)


@recorded("refusal")
def check_refusal(pool, case, backend, example: ParityExample) -> CaseResult:
    """A shape outside what the candidate accepts must be refused with a clear message:
    neither a parity failure nor (worse) a pass. FAIL if the candidate runs it anyway."""
    start = time.perf_counter()
    feed = feed_for(case, example, pool)
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
    return _finish(result, runner)


@recorded("batch")
def check_batch_consistency(pool, case, backend, example: ParityExample) -> CaseResult:
    """Metamorphic: a batch of N different images equals the N images run one by one."""
    start, feed, runner = _begin_on_candidate(pool, case, backend, example)
    batched = runner.infer(feed)  # a shape it refuses: REFUSED, by @recorded
    singles = [runner.infer(take_sample(feed, i)) for i in range(example.batch)]
    comparisons = []
    judge = pool.judge(case, backend)
    # The same noise model as parity: what the reference's own rounding does to these images.
    noise = pool.noise(case, example, judge).limits_only()
    # Neither side is the reference here: messages name the image run alone and the same
    # image inside its batch.
    with side_names("run alone", "batched run"), comparing(pool):
        for index, single in enumerate(singles):
            # Compare sample `index` of the batch with the batch-of-one run of that image.
            batched_sample = {name: value[index : index + 1] for name, value in batched.items()}
            comparisons += compare_case_outputs(
                case, single, batched_sample, judge=judge, noise=noise,
                image_size=(example.height, example.width), batch=1, label=f"batch[{index}] vs alone",
            )
    return _finish(_result("batch", case, backend, example, comparisons, start), runner, (feed, singles, batched))


@recorded("determinism")
def check_determinism(pool, case, backend, example: ParityExample) -> CaseResult:
    """The same backend run twice on the same feed gives bit-identical outputs."""
    start, feed, runner = _begin_on_candidate(pool, case, backend, example)
    first = runner.infer(feed)  # a shape it refuses: REFUSED, by @recorded
    second = runner.infer(feed)
    with side_names("run 1", "run 2"), comparing(pool):
        comparisons = compare_all_tensors(case, first, second, kind="determinism", judge=pool.judge(case, backend))
    return _finish(_result("determinism", case, backend, example, comparisons, start), runner, (feed, first, second))


def check_coverage(pool, case, backend) -> CaseResult:
    """Before any property: does the artifact take everything the case declares, and does
    something compare every declared output?

    One reference and one candidate inference at the export size (as the artifact takes
    it) show which outputs the case's to_instances reads (UnreadOutputError: ERROR).
    Then the shapes and dtypes the artifact accepts are compared with those the case
    declares (deploy_parity.contracts.bounds.coverage_gaps): an artifact that takes less, say one
    size of a declared range, batch 1 of a declared 4, float32 of a declared
    float32+uint8, is a FAIL naming both sides and the fix. The properties then draw
    only what the artifact takes, so this is the one place the gap is reported."""
    start = time.perf_counter()
    example = ParityExample(case.sizes.export_height or case.sizes.min_side,
                            case.sizes.export_width or case.sizes.min_side, 1, case.default_dtypes(), 1)
    try:
        with case_time_limit(pool, "coverage", case, backend):
            return _check_coverage(pool, case, backend, example, start)
    except CaseTimeout as error:
        return _timed_out("coverage", case, backend, example, error, start)


def _check_coverage(pool, case, backend, example, start) -> CaseResult:
    try:
        bounds = pool.bounds(case, backend)
    except Exception as error:  # noqa: BLE001 - the artifact could not be read at all
        return _errored("coverage", case, backend, example, error, start)
    example = export_size_example(case, bounds)
    gaps = coverage_gaps(case, bounds)
    comparisons, messages, runner = [], [], None
    if gaps:
        messages.append(describe_coverage_gaps(case, backend.name, bounds, gaps))
        comparisons += [Comparison("coverage", gap.input_name, Verdict.FAIL,
                                   message=f"input '{gap.input_name}' {gap.accepted}; the case declares {gap.declared}",
                                   evidence={"accepted": gap.accepted, "declared": gap.declared,
                                             "source": bounds.source}) for gap in gaps]
    try:
        feed = feed_for(case, example, pool)
        runner = candidate_runner(pool, case, backend, example)
        candidate = runner.infer(feed)
        reference = pool.reference(case).infer(feed)
        check_outputs_compared(case, reference, candidate, (example.height, example.width), example.batch)
    except Exception as error:  # noqa: BLE001 - UnsupportedShapeError too: the artifact's own size must run
        probe = _errored("coverage", case, backend, example, error, start)
        comparisons += probe.comparisons
        messages.append(probe.message)
    if not comparisons:
        drawn = ""
        if bounds.sizes:  # the engine budget: the run draws from these sizes only, and says so
            drawn = (f"; this run draws its sizes from {', '.join(f'{h}x{w}' for h, w in bounds.sizes)} "
                     f"({bounds.sizes_reason})")
        comparisons.append(Comparison("coverage", ",".join(case.input_names), Verdict.PASS,
                                      message=f"the artifact takes what the case declares ({bounds.source}){drawn}"))
    result = _result("coverage", case, backend, example, comparisons, start, message="\n".join(messages))
    if runner is not None:
        result.accepted = accepted_shapes(runner)
        result.placement = placement_note(runner)
    return result


def check_agreement(pool, case, backend, examples: list) -> CaseResult:
    """Task agreement of a reduced-precision backend over a fixed evaluation set: the task's
    own metric (box / keypoint / mask AP) with the reference as ground truth, per size, and
    the per-instance error distribution (deploy_parity/compare/agreement.py). A whole set,
    not one example: no per-case time limit; anything it raises is an ERROR result."""
    start = time.perf_counter()
    try:
        return _agreement(pool, case, backend, examples, start)
    except Exception as error:  # noqa: BLE001 - recorded as an ERROR verdict, with the exception
        return _errored("agreement", case, backend, examples[0], error, start)


def _agreement(pool, case, backend, examples: list, start: float) -> CaseResult:
    from deploy_parity.compare.agreement import judge_agreement

    groups: dict = {}
    for example in examples:
        feed = feed_for(case, example, pool)
        candidate = candidate_runner(pool, case, backend, example).infer(feed)
        reference = pool.answers(case, example).outputs
        for index in range(example.batch):
            size = (example.height, example.width)
            groups.setdefault(f"{example.height}x{example.width}", []).append(
                (case.to_instances(reference, index, size), case.to_instances(candidate, index, size)))
    row = pool.judge(case, backend).row("agreement")
    comparisons = judge_agreement(groups, row, case.keypoint_sigmas)
    first = examples[0]
    if not comparisons:
        return _result("agreement", case, backend, first, [Comparison(
            "agreement", "task agreement", Verdict.VACUOUS,
            message=f"the reference found no instances on any of the {len(examples)} evaluation examples: no "
                    "task to agree on")], start)
    images = sum(len(pairs) for pairs in groups.values())
    return _result("agreement", case, backend, first, comparisons, start,
                   message=f"task agreement over {len(examples)} examples ({images} images, sizes "
                           f"{', '.join(groups)})")


CHECKS = {"parity": check_parity, "batch": check_batch_consistency, "determinism": check_determinism}
