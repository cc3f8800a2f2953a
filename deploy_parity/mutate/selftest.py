"""The mutation self-test: how sensitive a case's parity suite is, and whether its failures
are localised to the right place.

For one case: its graph (the harness's export of the deploy module at the export size,
or the user's own .onnx) gets single-node mutants (operators.py); each mutant runs the
parity property on ONNX Runtime CPU exactly as the suite would (the same examples,
the same comparators, the same localisation of the failing example), as a user's graph
would. Each mutant ends as one of:

  equivalent       its outputs equal the unmutated graph's, bit for bit, on every example
                   the property ran: nothing to catch
  survived         it changes outputs and the suite passed: the suite is not sensitive to it
  caught, right    the suite failed and the localisation names the changed node (or the
                   module that owns it)
  caught, not localised   failed, and the localiser said it does not know (with why)
  caught, wrong    failed, and the localiser named another node or module: a defect

Scores: caught / non-equivalent, right / caught; wrong must be 0.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from deploy_parity.mutate.operators import OPERATORS, Mutant, plant


@dataclass
class MutantResult:
    mutant: Mutant
    outcome: str  # equivalent | survived | right | not localised | wrong | error
    verdict: str = ""
    example: str = ""
    localisation: str = ""
    seconds: float = 0.0  # the localisation's
    why: str = ""

    def to_record(self) -> dict:
        return {"id": self.mutant.id, "operator": self.mutant.operator, "node": self.mutant.node,
                "change": self.mutant.description, "outcome": self.outcome, "verdict": self.verdict,
                "example": self.example, "localisation": self.localisation, "localise_seconds": round(self.seconds, 3),
                "why": self.why}


@dataclass
class SelfTest:
    case: str
    graph: str
    results: list = field(default_factory=list)
    seconds: float = 0.0

    def count(self, *outcomes) -> int:
        return sum(r.outcome in outcomes for r in self.results)

    @property
    def live(self) -> int:
        return len(self.results) - self.count("equivalent")

    @property
    def caught(self) -> int:
        return self.count("right", "not localised", "wrong")

    def caught_fraction(self) -> float:
        return self.caught / self.live if self.live else float("nan")

    def right_fraction(self) -> float:
        return self.count("right") / self.caught if self.caught else float("nan")

    def summary(self) -> str:
        times = [r.seconds for r in self.results if r.outcome in ("right", "not localised", "wrong")]
        spent = f", localisation {np.median(times):.1f} s median, {max(times):.1f} s max" if times else ""
        return (f"{self.case}: {len(self.results)} mutants, {self.count('equivalent')} equivalent; caught "
                f"{self.caught}/{self.live} ({self.caught_fraction():.0%}); localised right {self.count('right')}/"
                f"{self.caught} ({self.right_fraction():.0%}), not localised {self.count('not localised')}, wrong "
                f"{self.count('wrong')}{spent}; {self.seconds:.0f} s")

    def to_record(self) -> dict:
        return {"case": self.case, "graph": self.graph, "mutants": len(self.results),
                "equivalent": self.count("equivalent"), "caught": self.caught, "live": self.live,
                "right": self.count("right"), "not_localised": self.count("not localised"),
                "wrong": self.count("wrong"), "seconds": round(self.seconds, 1),
                "results": [r.to_record() for r in self.results]}


def expected_module(mutant: Mutant, graph, module_of: dict, shared: set) -> Optional[str]:
    """The module a right module-level answer names: the one that owns the changed node
    (for an inserted node, the innermost module holding both what it reads and what reads
    it), or, where that module is shared under several names and so not recorded (one SiLU
    for a whole Ultralytics model), its nearest own ancestor."""
    if mutant.node in module_of:
        path = module_of[mutant.node]
    else:
        producer = next((module_of.get(n.name) for n in graph.node if mutant.site in n.output), None)
        consumers = [module_of.get(n.name) for n in graph.node if mutant.site in n.input]
        scopes = [p for p in [producer, *consumers] if p is not None]
        if not scopes:
            return None
        parts = [p.split(".") if p else [] for p in scopes]
        common = []
        for level in zip(*parts):
            if len(set(level)) > 1:
                break
            common.append(level[0])
        path = ".".join(common)
    parts = path.split(".") if path else []
    while parts and ".".join(parts) in shared:
        parts.pop()
    return ".".join(parts)


def judge_localisation(mutant: Mutant, localisation, expected: Optional[str]) -> tuple[str, str]:
    """(outcome, text) of a caught mutant's localisation."""
    if localisation is None:
        return "not localised", "no localisation ran"
    text = localisation.describe()
    layer = localisation.layer
    if localisation.stage != "export" or layer is None:
        if localisation.stage not in ("export", None) and layer is not None:
            return "wrong", text  # a graph edit blamed on the deploy rewrite or the runtime
        return "not localised", text
    named = {layer.get("node"), (layer.get("missing") or {}).get("node")} - {None}
    if mutant.node in named:
        return "right", text
    if layer.get("module") is not None and layer["module"] == expected and not layer.get("departs"):
        return "right", text  # module level: the module that owns the change
    return "wrong", text


def _settings_profile(examples: int):
    from hypothesis import HealthCheck, Phase, settings

    # The suite's ci profile, without shrinking: the first failing example is the evidence
    # (shrinking would only cost time), then localised as the suite localises it.
    settings.register_profile("parity-self-test", max_examples=examples, deadline=None, derandomize=True,
                              database=None, print_blob=False, phases=[Phase.explicit, Phase.generate],
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.function_scoped_fixture])
    return "parity-self-test"


def self_test(case, pool, *, operators=tuple(OPERATORS), per_operator: int = 2, examples: int = 10,
              workdir: Optional[Path] = None, progress: Callable[[str], None] = print) -> SelfTest:
    import onnx
    from hypothesis import settings

    from deploy_parity.backends import BACKENDS, onnx_for
    from deploy_parity.localize import run_with_intermediates
    from deploy_parity.localize.scopes import map_scopes
    from deploy_parity.properties import ParityFailure, PropertyRun
    from deploy_parity.strategies import export_size_example

    start = time.perf_counter()
    backend = BACKENDS["onnxrt-cpu"]
    bounds = pool.bounds(case, backend)
    probe = export_size_example(case, bounds)
    target = case.deploy_target(probe.height, probe.width, probe.dtypes)
    source = onnx_for(case, target, pool.context)
    model = onnx.load(str(source))
    feed = pool.feed(case, probe)
    values = {**feed, **run_with_intermediates(model, feed)}  # the graph's inputs are mutation sites too
    deploy = case.deploy_module(target)
    module_names = [n for n, _ in deploy.named_modules(remove_duplicate=False)]
    uses: dict = {}
    for name, sub in deploy.named_modules(remove_duplicate=False):
        uses.setdefault(id(sub), []).append(name)
    shared = {name for names in uses.values() if len(names) > 1 for name in names}
    module_of = map_scopes([n.name for n in model.graph.node], module_names).module_of
    mutants = plant(model, values, operators, per_operator)
    unmutated: dict = {}  # the unmutated graph's answer per example, shared by every mutant
    report = SelfTest(case.name, str(source))
    workdir = Path(workdir or tempfile.mkdtemp(prefix="parity-self-test-"))
    workdir.mkdir(parents=True, exist_ok=True)
    previous = getattr(settings, "_current_profile", None) or "default"
    settings.load_profile(_settings_profile(examples))
    try:
        for k, mutant in enumerate(mutants):
            path = workdir / f"{case.name}-mutant-{k}.onnx"
            onnx.save(mutant.model, str(path))
            # The case's own name: the reference, its float64 shadow and its answers are
            # computed once per example and shared by every mutant; only the graph changes.
            mutant_case = replace(case, onnx_path=path)
            pool.retire(case.name, backend.name)
            records: list = []
            run = PropertyRun(check="parity", case=mutant_case, backend=backend, pool=pool,
                              bounds=pool.bounds(mutant_case, backend), record=records.append,
                              nodeid="suites/test_parity.py::test_parity")
            try:
                run.run()
                failed = None
            except ParityFailure as failure:
                failed = failure
            except Exception as error:  # a mutant that breaks the harness itself is reported, not hidden
                report.results.append(MutantResult(mutant, "error", why=f"{type(error).__name__}: {error}"))
                progress(f"  {mutant.id}: ERROR {type(error).__name__}: {str(error)[:200]}")
                continue
            if failed is None:
                effects = [_effect(pool, case, source, path, backend, r.example, unmutated) for r in records]
                real = [text for within, text in effects if not within]
                outcome = "survived" if real else "equivalent"
                result = MutantResult(mutant, outcome, verdict="pass", why=(
                    f"{len(records)} examples passed; e.g. {real[0]}" if real else
                    f"on all {len(records)} examples its outputs are within the model's own float32 rounding of the "
                    f"unmutated graph's ({effects[0][1] if effects else 'no examples'})"))
            else:
                failing = [r for r in records if r.verdict.value in ("fail", "error")]
                last = failing[-1] if failing else None
                loc = getattr(last, "localisation", None) if last else None
                if last is None:  # the suite failed on its fractions (too many ambiguous cases): no example to localise
                    outcome, text = "not localised", ("the suite failed without a failing example: "
                                                      + str(failed).splitlines()[0][:300])
                elif last.verdict.value == "error":  # the graph cannot run: caught, not localised
                    outcome, text = "not localised", f"the check raised: {last.message}"
                else:
                    outcome, text = judge_localisation(mutant, loc, expected_module(mutant, model.graph, module_of,
                                                                                    shared))
                result = MutantResult(mutant, outcome, verdict=last.verdict.value if last else "fail",
                                      example=last.example.describe() if last else "", localisation=text,
                                      seconds=loc.seconds if loc is not None else 0.0)
            report.results.append(result)
            progress(f"  {mutant.id} ({mutant.description}): {result.outcome}"
                     + (f" [{result.example}]" if result.example else "")
                     + (f"\n      {result.localisation.splitlines()[1] if len(result.localisation.splitlines()) > 1 else result.localisation}"
                        if result.outcome in ("wrong", "not localised") else ""))
    finally:
        settings.load_profile(previous)
        pool.retire(case.name, backend.name)
    report.seconds = time.perf_counter() - start
    return report


def _effect(pool, case, source, mutant_path, backend, example, unmutated: dict) -> tuple[bool, str]:
    """(within rounding, what): does the mutation change what the suite judges (the case's
    boxes, keypoints, masks, tensors: not the raw scores of anchors below the threshold)
    by more than the model's own float32 rounding? The unmutated graph's answer against
    the mutant's, through the case's comparators with the noise factor of the table's
    ("mutant", *, *) row. Beyond it, a mutant the suite should catch; within it, an
    equivalent one (an offset a LayerNorm or softmax removes, a change to anchors no
    detection comes from)."""
    from deploy_parity.compare.case_outputs import compare_case_outputs
    from deploy_parity.compare.judge import Judge
    from deploy_parity.compare.tolerances import Tolerance, lookup
    from deploy_parity.compare.verdict import Verdict, combine

    row = lookup("mutant", backend.name, backend.precision)
    judge = Judge.for_case(case, backend.name, backend.precision)
    judge.overrides = {**judge.overrides, "noise": Tolerance({"factor": row["equivalent_within"]}, row.reason)}
    from deploy_parity.localize import run_with_intermediates

    feed = pool.feed(case, example)
    # Both graphs alike (one thread, no fusion); the unmutated graph's answer once per example
    # for every mutant (`unmutated`, the self-test's own), not once per mutant.
    key = (example.height, example.width, example.batch, example.seed, tuple(example.dtypes))
    if key not in unmutated:
        unmutated[key] = run_with_intermediates(source, feed, [])
    original = unmutated[key]
    mutated = run_with_intermediates(mutant_path, feed, [])
    noise = pool.noise(case, example, judge).limits_only()
    comparisons = compare_case_outputs(case, original, mutated, judge=judge, noise=noise, batch=example.batch,
                                       image_size=(example.height, example.width), label="unmutated vs mutant")
    if combine(c.verdict for c in comparisons) in (Verdict.FAIL, Verdict.ERROR):
        worst = next(c for c in comparisons if c.verdict in (Verdict.FAIL, Verdict.ERROR))
        return False, f"{example.describe()}: {worst.kind} {worst.output}: {worst.message}"
    return True, f"within {row['equivalent_within']:g} x the model's own rounding on what the suite judges"
