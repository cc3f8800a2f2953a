"""The noise floor: each model judged against its own rounding (deploy_parity/compare/noise.py).

A detector whose correct export moves corners six times further than the fp32 table's
0.01 px passes; the same detector shifted +0.5 px, with a mid-network conv scaled by
1.05, or fed BGR fails with a shrunk example; the noise floor is in every record and in
the failure message; a model whose shadow cannot run is judged by the table row and says
so. The suite runs in a subprocess, as a user runs it.
"""

from __future__ import annotations

import numpy as np
import pytest

from deploy_parity.compare.instances import Instances
from deploy_parity.compare.judge import Judge
from deploy_parity.compare.noise import NoiseFloor
from deploy_parity.compare.structured import compare_instances
from deploy_parity.compare.tolerances import lookup
from deploy_parity.compare.verdict import Verdict, beyond
from tests.suite_runs import run_suite

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    return run_suite(tmp_path_factory.mktemp("noise"), "--model-module", "tests/noisy_cases.py", "-q")


def _records(run, model, check="parity"):
    return [r for r in run.records() if r["model"] == model and r["check"] == check]


def test_a_correct_export_beyond_the_fp32_rows_passes_on_its_own_rounding(noisy_run):
    table_corner = lookup("boxes", "onnxrt-cpu", "fp32")["corner_px"]
    for check in ("parity", "batch"):
        records = _records(noisy_run, "noisy-det", check)
        assert records and {r["verdict"] for r in records} == {"pass"}, noisy_run.output[-3000:]
    parity = _records(noisy_run, "noisy-det")
    worst = max(c["metrics"]["max_corner_px"] for r in parity for c in r["comparisons"] if c["kind"] == "boxes")
    assert worst > 3 * table_corner  # the old fixed row would have failed it
    boxes = [c for r in parity for c in r["comparisons"] if c["kind"] == "boxes"]
    noise = boxes[0]["noise"]["corner_px"]
    assert noise["how"] == "float64 shadow" and noise["noise"] > table_corner
    assert noise["limit"] == pytest.approx(noise["factor"] * noise["noise"])
    # The HTML report's cases table shows it per case.
    from reports.html import noise_cell

    assert noise_cell(parity[0]).startswith("corners 0.0") and "20 x float64 shadow" in noise_cell(parity[0])


@pytest.mark.parametrize("model, evidence", [("noisy-det-shifted", "systematic shift +0.5"),
                                             ("noisy-det-conv-scaled", "float64 shadow"),
                                             ("noisy-det-bgr", "float64 shadow")])
def test_broken_deploys_of_the_noisy_model_still_fail_with_a_shrunk_example(noisy_run, model, evidence):
    assert noisy_run.returncode == 1
    failing = [r for r in _records(noisy_run, model) if r["verdict"] == "fail"]
    assert failing, f"{model} was not caught:\n{noisy_run.output[-3000:]}"
    text = noisy_run.output
    section = text[text.index(f"test_parity[{model}@onnxrt-cpu]"):]
    # Hypothesis's smallest failing example (an explicit one, when the export size already
    # fails) and the command that replays it.
    assert "ParityExample(height=" in section and "--replay h=" in section
    messages = " ".join(c["message"] for r in failing for c in r["comparisons"] if c["verdict"] == "fail")
    assert evidence in messages
    # The failure message names the noise floor, the factor and the limit it gave.
    assert "this model's float32 rounding moves it" in messages and "float64 shadow" in messages


def test_a_model_whose_shadow_cannot_run_is_judged_by_the_table_and_says_so(noisy_run):
    records = _records(noisy_run, "quiet-det-float32-only")
    assert records and {r["verdict"] for r in records} == {"pass"}
    notes = {c["noise"].get("note", "") for r in records for c in r["comparisons"] if c["kind"] == "boxes"}
    assert len(notes) == 1
    [note] = notes
    assert note.startswith("table row only: the reference cannot run in fp64") and "float32 images" in note
    from reports.html import noise_cell

    assert noise_cell(records[0]) == note
    for record in records:
        for comparison in record["comparisons"]:
            if comparison["kind"] == "boxes":
                assert comparison["tolerance"]["corner_px"] == lookup("boxes", "onnxrt-cpu", "fp32")["corner_px"]


def _people(boxes, scores):
    return Instances(boxes=np.asarray(boxes, dtype=np.float64), scores=np.asarray(scores, dtype=np.float64),
                     labels=np.zeros(len(scores), dtype=np.int64))


def _noise(corner_px=1e-3):
    return NoiseFloor("fp32", 20.0, "float64 shadow", {("boxes", "corner_px"): corner_px, ("boxes", "score"): 1e-7})


def test_a_reference_on_a_rounding_knife_edge_is_ambiguous_when_the_candidate_sides_with_float64():
    judge = Judge("onnxrt-cpu", "fp32", model="toy", score_threshold=0.5)
    kept = [[10, 10, 60, 80], [100, 20, 150, 90]]
    # float32 reference kept a third box the float64 run (and the candidate) dropped.
    reference = _people(kept + [[30, 40, 90, 120]], [0.9, 0.8, 0.7])
    shadow = _people(kept, [0.9, 0.8])
    candidate = _people(kept, [0.9, 0.8])
    plain = compare_instances(reference, candidate, judge, noise=_noise())
    assert plain[0].verdict == Verdict.FAIL
    ambiguous = compare_instances(reference, candidate, judge, noise=_noise(), shadow=shadow)
    assert ambiguous[0].verdict == Verdict.AMBIGUOUS
    assert "rounding knife edge" in ambiguous[0].message and "float64 shadow" in ambiguous[0].message
    assert "knife_edge" in ambiguous[0].evidence
    # A candidate that drops a box both reference runs keep is a failure, shadow or not.
    lost = compare_instances(reference, _people(kept[:1], [0.9]), judge, noise=_noise(), shadow=shadow)
    assert lost[0].verdict == Verdict.FAIL


def test_the_noise_floor_widens_the_limit_and_the_message_shows_it():
    judge = Judge("onnxrt-cpu", "fp32", model="toy", score_threshold=0.5)
    reference = _people([[10, 10, 60, 80]], [0.9])
    candidate = _people([[10.05, 10, 60, 80]], [0.9])
    [table_only] = compare_instances(reference, candidate, judge)
    assert table_only.verdict == Verdict.FAIL and "corner error 0.05 px > 0.01 px" in table_only.message
    [noisy] = compare_instances(reference, candidate, judge, noise=_noise(corner_px=0.004))
    assert noisy.verdict == Verdict.PASS and noisy.tolerance["corner_px"] == pytest.approx(0.08)
    [quiet] = compare_instances(reference, candidate, judge, noise=_noise(corner_px=0.001))
    assert quiet.verdict == Verdict.FAIL
    assert ("corner error 0.05 px > 0.02 px (this model's float32 rounding moves it 0.001 px (float64 shadow); "
            "limit 0.02 px: 20 x)") in quiet.message


def test_messages_print_the_digits_their_comparison_needs():
    assert beyond(0.0104, 0.01, " px") == "0.0104 px > 0.01 px"
    assert beyond(0.0100004, 0.01) == "0.0100004 > 0.01"
    assert beyond(1.5e-4, 5.41e-5) == "0.00015 > 5.41e-05"


def test_a_model_not_robust_to_fp16_is_reported_as_such_apart_from_the_engine():
    from deploy_parity.compare.noise import robustness

    judge = Judge("trt-fp16", "fp16", model="tiny-mask-rcnn")
    # As measured on an H200: the tiny Mask R-CNN moved a box 3.96 px under fp16 on its own.
    fragile = NoiseFloor("fp16", judge.noise_factor, "the reference in fp16 on the CPU",
                         {("boxes", "corner_px"): 3.96, ("boxes", "score"): 1e-3})
    comparison = robustness(fragile, judge.row)
    assert comparison is not None and comparison.verdict == Verdict.FAIL and comparison.kind == "robustness"
    assert "not fp16-robust" in comparison.message and "box corners 3.96 px" in comparison.message
    assert "box scores" not in comparison.message  # within the fp16 row
    steady = NoiseFloor("fp16", judge.noise_factor, "the reference in fp16 on the CPU", {("boxes", "corner_px"): 0.2})
    assert robustness(steady, judge.row) is None
    # fp32's shadow is float64: more exact than the reference, never a robustness verdict.
    assert robustness(_noise(corner_px=3.96), Judge("onnxrt-cpu", "fp32").row) is None


def test_self_comparison_and_the_shared_reference_say_what_they_compare(pool):
    from deploy_parity import InputSpec, ModelCase, SizeSpace
    from deploy_parity.adapters import MMDeployDetections
    from deploy_parity.backends import BACKENDS
    from deploy_parity.check import check_batch_consistency, check_parity
    from deploy_parity.strategies import ParityExample
    from tests.noisy_cases import NoisyDetector

    case = ModelCase(name="noisy-self", build_reference=lambda: NoisyDetector().eval(),
                     inputs=(InputSpec("images", "image", ("float32",)),), adapter=MMDeployDetections(dets="dets"),
                     sizes=SizeSpace(min_side=32, max_side=96), max_batch=2)
    example = ParityExample(48, 80, 2, ("float32",), 3)
    result = check_parity(pool, case, BACKENDS["torch-cpu"], example)
    assert result.verdict == Verdict.PASS, result.summary()
    assert result.message.startswith("self-comparison: noisy-self has no build_deploy")
    batch = check_batch_consistency(pool, case, BACKENDS["torch-cpu"], example)
    assert batch.verdict == Verdict.PASS, batch.summary()
    # The batch check is judged with the same noise model as parity.
    boxes = [c for c in batch.comparisons if c.kind == "boxes"]
    assert boxes and all(c.noise["corner_px"]["how"] == "float64 shadow" for c in boxes)
    # One reference run (and one shadow) for the example, shared by both checks.
    assert pool.reference_runs == 1


def test_one_unstable_box_does_not_widen_the_others_and_is_a_knife_edge_itself():
    from deploy_parity.compare.noise import _robust_floor

    # Per-pair corner noise of one example: four ordinary boxes and one 16-px outlier.
    entries = [(0, 0, 0.004), (0, 1, 0.006), (0, 2, 0.005), (0, 3, 0.003), (0, 4, 16.0)]
    floor, unstable, typical = _robust_floor(entries, 20.0, 0.01)
    assert floor == pytest.approx(0.006) and typical == pytest.approx(0.005)
    assert [(s, i) for s, i, _ in unstable] == [(0, 4)]
    # Two pairs: which is odd is unknowable, so the smaller is typical; the 16 px one never
    # widens the other's limit. One pair: its own rounding is all there is.
    assert _robust_floor(entries[3:], 20.0, 0.01)[:2] == (0.003, [(0, 4, 16.0)])
    assert _robust_floor(entries[4:], 20.0, 0.01)[:2] == (16.0, [])

    judge = Judge("onnxrt-cpu", "fp32", model="toy", score_threshold=0.5)
    boxes = [[10, 10, 60, 80], [100, 20, 150, 90], [20, 100, 90, 160], [120, 110, 180, 170], [200, 20, 260, 120]]
    scores = [0.9, 0.8, 0.75, 0.7, 0.65]
    reference = _people(boxes, scores)
    moved = np.array(boxes, dtype=np.float64)
    moved[4] += [16, 0, 16, 0]  # the unstable box moves 16 px (IoU 0.58)
    noise = _noise(corner_px=floor)
    own = {4: {"limits": {("boxes", "corner_px"): 20 * 16.0},
               "why": ["box corners 16 px, over 20 x the example's typical 0.005 px"]}}
    [edge] = compare_instances(reference, _people(moved, scores), judge, noise=noise, unstable=own)
    assert edge.verdict == Verdict.AMBIGUOUS and "rounding knife edge" in edge.message
    # ... while a 0.5 px error on a stable box still fails: the outlier widened nothing.
    stable_moved = moved.copy()
    stable_moved[0] += [0.5, 0, 0.5, 0]
    [caught] = compare_instances(reference, _people(stable_moved, scores), judge, noise=noise, unstable=own)
    assert caught.verdict == Verdict.FAIL and "reference instance 0" in caught.message
    # ... and the unstable instance itself is never excused for a changed label or for vanishing.
    relabelled = _people(moved, scores)
    relabelled.labels[4] = 1
    assert compare_instances(reference, relabelled, judge, noise=noise, unstable=own)[0].verdict == Verdict.FAIL
    dropped = _people(moved[:4], scores[:4])
    assert compare_instances(reference, dropped, judge, noise=noise, unstable=own)[0].verdict == Verdict.FAIL


def test_a_reference_whose_own_answer_moves_under_resize_sized_input_changes_is_a_knife_edge():
    from deploy_parity.compare.noise import excuse_input_knife_edges
    from deploy_parity.compare.verdict import Comparison

    def failing(corner, unmatched=0, kind="boxes", output="sample 0 / boxes"):
        return Comparison(kind, output, Verdict.FAIL, message=f"corner error {corner} px > 0.0352 px",
                          metrics={"max_corner_px": corner, "max_score_abs": 1e-3, "n_unmatched_ref": unmatched,
                                   "n_unmatched_cand": 0, "label_mismatches": 0})

    # The reference's own answer on the jittered feed fails the same output as badly: ambiguous, with evidence.
    [excused] = excuse_input_knife_edges([failing(21.3)], [[failing(19.0)], [failing(0.1)]], 2 ** -16)
    assert excused.verdict == Verdict.AMBIGUOUS and "knife edge inside the model" in excused.message
    assert excused.evidence["input_knife_edge"]["reference_vs_jittered"].startswith("corner error 19.0 px")
    # The candidate errs further than the jitter moves the reference (a +0.5 px shift beside a 0.1 px
    # sensitivity), loses an instance the jittered runs keep, or the jitter moves nothing: it fails.
    assert excuse_input_knife_edges([failing(0.5)], [[failing(0.1)]], 2 ** -16)[0].verdict == Verdict.FAIL
    assert excuse_input_knife_edges([failing(0.05, unmatched=1)], [[failing(0.1)]], 2 ** -16)[0].verdict == \
        Verdict.FAIL
    steady = Comparison("boxes", "sample 0 / boxes", Verdict.PASS, message="fine")
    assert excuse_input_knife_edges([failing(21.3)], [[steady]], 2 ** -16)[0].verdict == Verdict.FAIL
    # Another output, a raw tensor or the systematic shift are never excused by it.
    other = failing(21.3, output="sample 1 / boxes")
    assert excuse_input_knife_edges([other], [[failing(30.0)]], 2 ** -16)[0].verdict == Verdict.FAIL
    for kind in ("tensor", "shift"):
        raw = failing(21.3, kind=kind, output="x")
        assert excuse_input_knife_edges([raw], [[failing(30.0, kind=kind, output="x")]], 2 ** -16)[0].verdict == \
            Verdict.FAIL
