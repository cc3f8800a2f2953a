"""Box comparison: order-invariant, tie-aware at the score threshold and the top-k cut."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy_parity.compare.boxes import Matching, box_iou, compare_boxes, match_instances
from deploy_parity.compare.instances import Instances
from deploy_parity.compare.tolerances import lookup
from deploy_parity.compare.verdict import Verdict
from tests.instance_strategies import grid_layout, one_instance

TOL = lookup("boxes", "onnxruntime", "fp32")
MARGIN = TOL["ambiguity_margin"]
THRESHOLD = 0.3
CELL = 80  # boxes live in distinct cells of an 8 x 8 grid over a 640 x 640 image


@st.composite
def grid_instances(draw, min_size=1, max_size=12, min_score=0.6):
    """Instances whose boxes sit in distinct grid cells, so different instances never overlap."""
    rng, boxes = draw(grid_layout(min_size, max_size, cell=CELL))
    n = len(boxes)
    return Instances(boxes=boxes, scores=rng.uniform(min_score, 1.0, n), labels=rng.integers(0, 5, n))


def permuted(inst, rng):
    return inst.select(rng.permutation(len(inst)))


def compare(ref, cand, **kwargs):
    comparison, _ = compare_boxes(ref, cand, TOL, **kwargs)
    return comparison


seeds = st.integers(0, 2**32 - 1)


# ---- metamorphic properties -------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(grid_instances(), seeds)
def test_permuting_instance_order_passes(ref, seed):
    result = compare(ref, permuted(ref, np.random.default_rng(seed)), score_threshold=THRESHOLD)
    assert result.verdict == Verdict.PASS, result.message
    assert result.metrics["n_matched"] == len(ref)
    assert result.metrics["min_iou"] == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(grid_instances(), seeds)
def test_small_noise_within_tolerance_passes(ref, seed):
    rng = np.random.default_rng(seed)
    cand = Instances(
        boxes=ref.boxes + rng.uniform(-0.9, 0.9, ref.boxes.shape) * TOL["corner_px"],
        scores=ref.scores + rng.uniform(-0.9, 0.9, len(ref)) * TOL["score_abs"],
        labels=ref.labels,
    )
    result = compare(ref, permuted(cand, rng), score_threshold=THRESHOLD)
    assert result.verdict == Verdict.PASS, result.message


@settings(max_examples=40, deadline=None)
@given(one_instance(grid_instances()))
def test_dropping_a_confident_box_fails(picked):
    ref, dropped = picked
    cand = ref.select(np.arange(len(ref)) != dropped)
    result = compare(ref, cand, score_threshold=THRESHOLD)
    assert result.verdict == Verdict.FAIL
    assert f"reference instance {dropped} " in result.message
    assert result.metrics["n_unmatched_ref"] == 1


@settings(max_examples=40, deadline=None)
@given(one_instance(grid_instances(min_size=2)), st.floats(-0.9, 0.9))
def test_box_at_the_score_threshold_on_one_side_only_is_ambiguous(picked, fraction):
    ref, i = picked
    offset = fraction * MARGIN
    scores = ref.scores.copy()
    scores[i] = THRESHOLD + offset
    ref = Instances(boxes=ref.boxes, scores=scores, labels=ref.labels)
    others = ref.select(np.arange(len(ref)) != i)

    ref_only = compare(ref, others, score_threshold=THRESHOLD)
    cand_only = compare(others, ref, score_threshold=THRESHOLD)
    for result, side in ((ref_only, "reference"), (cand_only, "candidate")):
        assert result.verdict == Verdict.AMBIGUOUS, result.message
        [evidence] = result.evidence["ambiguous"]
        assert evidence["side"] == side
        assert evidence["boundary"] == "score threshold"
        assert evidence["distance"] <= MARGIN


@settings(max_examples=40, deadline=None)
@given(grid_instances(min_size=2, max_size=10), st.data())
def test_swap_at_the_topk_cut_is_ambiguous(ref, data):
    # Both sides kept exactly top-k; the last slot went to different, near-equal boxes.
    topk = len(ref)
    lowest = int(np.argmin(ref.scores))
    free_cells = sorted(set(range(64)) - {int(b[0] // CELL + 8 * (b[1] // CELL)) for b in ref.boxes})
    cell = data.draw(st.sampled_from(free_cells))
    x, y = (cell % 8) * CELL + 5, (cell // 8) * CELL + 5
    newcomer_score = ref.scores[lowest] + data.draw(st.floats(-0.9, 0.9)) * MARGIN
    keep = np.arange(len(ref)) != lowest
    cand = Instances(
        boxes=np.vstack([ref.boxes[keep], [[x, y, x + 50, y + 50]]]),
        scores=np.append(ref.scores[keep], newcomer_score),
        labels=np.append(ref.labels[keep], 0),
    )
    result = compare(ref, cand, topk=topk)
    assert result.verdict == Verdict.AMBIGUOUS, result.message
    assert result.metrics["n_ambiguous"] == 2
    assert all(e["boundary"].startswith("top-k cut") for e in result.evidence["ambiguous"])


@settings(max_examples=40, deadline=None)
@given(one_instance(grid_instances()), st.data())
def test_nan_or_inf_in_boxes_or_scores_fails(picked, data):
    ref, i = picked
    side = data.draw(st.sampled_from(["reference", "candidate"]))
    field = data.draw(st.sampled_from(["boxes", "scores"]))
    bad = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    broken = Instances(boxes=ref.boxes.copy(), scores=ref.scores.copy(), labels=ref.labels)
    if field == "boxes":
        broken.boxes[i, data.draw(st.integers(0, 3))] = bad
    else:
        broken.scores[i] = bad
    ref_side, cand_side = (broken, ref) if side == "reference" else (ref, broken)
    result = compare(ref_side, cand_side, score_threshold=THRESHOLD)
    assert result.verdict == Verdict.FAIL
    assert result.message.startswith(f"{side} {field}[{i}")


@settings(max_examples=40, deadline=None)
@given(one_instance(grid_instances()))
def test_changed_label_fails(picked):
    ref, i = picked
    labels = ref.labels.copy()
    labels[i] = (labels[i] + 1) % 5
    cand = Instances(boxes=ref.boxes, scores=ref.scores, labels=labels)
    result = compare(ref, cand, score_threshold=THRESHOLD)
    assert result.verdict == Verdict.FAIL
    assert result.metrics["label_mismatches"] == 1
    assert f"reference instance {i} " in result.message and "label" in result.message


@settings(max_examples=30, deadline=None)
@given(one_instance(grid_instances()), st.floats(2.0, 10.0))
def test_shifted_box_fails_naming_it(picked, shift):
    ref, i = picked
    boxes = ref.boxes.copy()
    boxes[i] += shift
    result = compare(ref, Instances(boxes=boxes, scores=ref.scores, labels=ref.labels))
    assert result.verdict == Verdict.FAIL
    assert f"reference instance {i} " in result.message
    assert result.metrics["max_corner_px"] == pytest.approx(shift)


# ---- empty outputs ---------------------------------------------------------------------


def empty():
    return Instances(boxes=np.zeros((0, 4)), scores=np.zeros(0), labels=np.zeros(0, dtype=int))


def test_empty_against_empty_is_vacuous_never_pass():
    result = compare(empty(), empty(), score_threshold=THRESHOLD)
    assert result.verdict == Verdict.VACUOUS


def test_empty_reference_against_confident_candidate_fails():
    cand = Instances(boxes=[[0, 0, 50, 50]], scores=[0.9], labels=[1])
    result = compare(empty(), cand, score_threshold=THRESHOLD)
    assert result.verdict == Verdict.FAIL
    assert "candidate instance 0" in result.message


def test_empty_reference_against_candidate_at_threshold_is_vacuous():
    cand = Instances(boxes=[[0, 0, 50, 50]], scores=[THRESHOLD + MARGIN / 2], labels=[1])
    assert compare(empty(), cand, score_threshold=THRESHOLD).verdict == Verdict.VACUOUS


def test_empty_reference_without_threshold_fails_on_any_candidate():
    cand = Instances(boxes=[[0, 0, 50, 50]], scores=[0.31], labels=[1])
    assert compare(empty(), cand).verdict == Verdict.FAIL


# ---- decisions that are easy to get wrong ----------------------------------------------


def test_topk_cut_does_not_excuse_a_side_that_had_room():
    # The candidate kept fewer than top-k, so nothing forced it to drop the reference's last box.
    ref = Instances(boxes=[[0, 0, 50, 50], [100, 0, 150, 50]], scores=[0.9, 0.5], labels=np.array([0, 0]))
    cand = ref.select([0])
    assert compare(ref, cand, topk=2).verdict == Verdict.FAIL


def test_candidate_box_clearly_below_threshold_is_ignored():
    ref = Instances(boxes=[[0, 0, 50, 50]], scores=[0.9], labels=[0])
    cand = Instances(boxes=[[0, 0, 50, 50], [100, 0, 150, 50]], scores=[0.9, 0.05], labels=[0, 0])
    result = compare(ref, cand, score_threshold=THRESHOLD)
    assert result.verdict == Verdict.PASS
    assert result.metrics["n_below_threshold"] == 1


def test_failure_message_names_instance_boxes_and_metric():
    ref = Instances(boxes=[[10, 20, 60, 80]], scores=[0.91], labels=[3])
    cand = Instances(boxes=[[10, 20, 63, 80]], scores=[0.91], labels=[3])
    result = compare(ref, cand)
    assert result.verdict == Verdict.FAIL
    assert "reference instance 0 (box [10.0, 20.0, 60.0, 80.0], score 0.91, label 3)" in result.message
    assert "candidate instance 0 (box [10.0, 20.0, 63.0, 80.0]" in result.message
    assert f"corner error 3 px > {TOL['corner_px']:g} px" in result.message
    assert result.tolerance == dict(TOL.values)
    assert result.tolerance_source == TOL.source


def test_box_iou_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]], dtype=float)
    iou = box_iou(a, b)
    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0, 0.0])
    np.testing.assert_allclose(iou[1], [0.0, 0.0, 0.0, 1.0])  # same degenerate box
    assert np.isnan(box_iou([[0, 0, np.nan, 10]], [[0, 0, 10, 10]])[0, 0])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)


def test_matching_prefers_a_label_match_over_higher_iou():
    ref = Instances(boxes=[[0, 0, 100, 100]], scores=[0.9], labels=[1])
    cand = Instances(boxes=[[0, 0, 100, 99], [0, 0, 100, 60]], scores=[0.9, 0.9], labels=[2, 1])
    matching = match_instances(ref, cand)
    assert isinstance(matching, Matching)
    assert matching.pairs == [(0, 1)]
    assert matching.unmatched_cand.tolist() == [0]


def test_matching_pairs_coincident_boxes_by_label():
    # A person and a bag with identical boxes, listed in opposite orders.
    box = [10, 10, 60, 90]
    ref = Instances(boxes=[box, box], scores=[0.9, 0.8], labels=[0, 7])
    cand = Instances(boxes=[box, box], scores=[0.8, 0.9], labels=[7, 0])
    assert match_instances(ref, cand).pairs == [(0, 1), (1, 0)]
    assert compare(ref, cand).verdict == Verdict.PASS


def test_matching_leaves_barely_overlapping_pairs_unmatched():
    ref = Instances(boxes=[[0, 0, 100, 100]], scores=[0.9])
    cand = Instances(boxes=[[95, 95, 195, 195]], scores=[0.9])
    matching = match_instances(ref, cand, min_iou=0.1)
    assert matching.pairs == []
    assert matching.unmatched_ref.tolist() == [0] and matching.unmatched_cand.tolist() == [0]


def test_fixed_topk_output_with_no_confident_reference_instance_is_vacuous():
    """A top-k model returns k instances whatever it sees: low-score agreement is no pass."""
    boxes = np.array([[10, 10, 40, 40], [60, 10, 90, 40], [10, 60, 40, 90]], dtype=float)
    ref = Instances(boxes=boxes, scores=np.array([0.2, 0.15, 0.1]))
    cand = Instances(boxes=boxes.copy(), scores=np.array([0.2, 0.15, 0.1]))
    tol = lookup("boxes", "onnxrt-cpu", "fp32")
    comparison, _ = compare_boxes(ref, cand, tol, score_threshold=0.5, topk=3)
    assert comparison.verdict == Verdict.VACUOUS, comparison.message
    assert "no instance scoring >= 0.5" in comparison.message
    confident = Instances(boxes=boxes, scores=np.array([0.9, 0.15, 0.1]))
    comparison, _ = compare_boxes(confident, confident, tol, score_threshold=0.5, topk=3)
    assert comparison.verdict == Verdict.PASS
