"""Keypoint comparison: paired through the box matching, OKS-aware, tie-aware."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy_parity.compare.boxes import compare_boxes, match_instances
from deploy_parity.compare.instances import Instances
from deploy_parity.compare.keypoints import (
    COCO_KEYPOINT_NAMES,
    COCO_SIGMAS,
    compare_keypoints,
    object_keypoint_similarity,
)
from deploy_parity.compare.tolerances import lookup
from deploy_parity.compare.verdict import Verdict
from tests.instance_strategies import grid_layout, keypoints_inside, one_instance, one_keypoint

TOL = lookup("keypoints", "onnxruntime", "fp32")
BOX_TOL = lookup("boxes", "onnxruntime", "fp32")
CELL = 80
K = 17


@st.composite
def people(draw, min_size=1, max_size=12):
    """Instances with 17 keypoints inside well-separated boxes and clear heatmap peaks."""
    rng, boxes = draw(grid_layout(min_size, max_size, cell=CELL))
    n = len(boxes)
    keypoints = keypoints_inside(rng, boxes, K)
    return Instances(
        boxes=boxes,
        scores=rng.uniform(0.6, 1.0, n),
        labels=np.zeros(n, dtype=int),
        keypoints=keypoints,
        keypoint_peak_gap=rng.uniform(0.01, 1.0, (n, K)),
    )


def copy_of(inst, keypoints=None, peak_gap=None):
    return Instances(
        boxes=inst.boxes,
        scores=inst.scores,
        labels=inst.labels,
        keypoints=inst.keypoints.copy() if keypoints is None else keypoints,
        keypoint_peak_gap=inst.keypoint_peak_gap if peak_gap is None else peak_gap,
    )


def compare(ref, cand, **kwargs):
    return compare_keypoints(ref, cand, match_instances(ref, cand), TOL, **kwargs)


seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=40, deadline=None)
@given(people(), seeds)
def test_permuting_instance_order_passes(ref, seed):
    cand = ref.select(np.random.default_rng(seed).permutation(len(ref)))
    result = compare(ref, cand)
    assert result.verdict == Verdict.PASS, result.message
    assert result.metrics["max_px"] == 0.0
    assert result.metrics["min_oks"] == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(people(), seeds)
def test_small_noise_within_tolerance_passes(ref, seed):
    rng = np.random.default_rng(seed)
    keypoints = ref.keypoints.copy()
    keypoints[..., :2] += rng.uniform(-0.7, 0.7, keypoints[..., :2].shape) * TOL["pixel"]  # hypot <= 0.99 px limit
    keypoints[..., 2] += rng.uniform(-0.9, 0.9, keypoints[..., 2].shape) * TOL["score_abs"]
    result = compare(ref, copy_of(ref, keypoints).select(rng.permutation(len(ref))))
    assert result.verdict == Verdict.PASS, result.message


@settings(max_examples=40, deadline=None)
@given(one_keypoint(people()), st.data())
def test_shifting_one_keypoint_fails_and_names_instance_and_keypoint(picked, data):
    ref, i, j = picked
    coord = data.draw(st.sampled_from([0, 1]))
    shift = data.draw(st.floats(TOL["pixel"] * 2, 40.0)) * data.draw(st.sampled_from([-1, 1]))
    keypoints = ref.keypoints.copy()
    keypoints[i, j, coord] += shift
    order = data.draw(st.permutations(range(len(ref))))
    result = compare(ref, copy_of(ref, keypoints).select(np.array(order)))
    assert result.verdict == Verdict.FAIL
    moved = abs(keypoints[i, j, coord] - ref.keypoints[i, j, coord])  # the shift as float arithmetic left it
    shown = f"{moved:.1f}" if moved >= 1 else f"{moved:.3g}"  # the digits a sub-pixel error needs
    assert f"instance {i} keypoint {j} ({COCO_KEYPOINT_NAMES[j]}): {shown} px" in result.message
    assert f"mostly in {'xy'[coord]}" in result.message
    assert (result.metrics["worst_instance"], result.metrics["worst_keypoint"]) == (i, j)


@settings(max_examples=40, deadline=None)
@given(one_keypoint(people()), st.data())
def test_keypoint_jump_between_equal_heatmap_peaks_is_ambiguous_not_fail(picked, data):
    ref, i, j = picked
    jump = data.draw(st.floats(5.0, 40.0))
    keypoints = ref.keypoints.copy()
    keypoints[i, j, 0] += jump
    cand = copy_of(ref, keypoints)

    tied_gap = ref.keypoint_peak_gap.copy()
    tied_gap[i, j] = data.draw(st.floats(0.0, TOL["peak_gap"] * 0.99))
    # The tie is the model's: both sides' heatmaps carry it (the candidate's gap is compared too).
    tied = compare(copy_of(ref, peak_gap=tied_gap), copy_of(cand, peak_gap=tied_gap))
    assert tied.verdict == Verdict.AMBIGUOUS, tied.message
    [tie] = tied.evidence["ties"]
    assert (tie["ref_index"], tie["keypoint"]) == (i, j)
    assert tie["peak_gap"] == tied_gap[i, j] and tie["error_px"] == pytest.approx(jump)

    clear_gap = ref.keypoint_peak_gap.copy()
    clear_gap[i, j] = data.draw(st.floats(TOL["peak_gap"] * 10, 1.0))
    assert compare(copy_of(ref, peak_gap=clear_gap), cand).verdict == Verdict.FAIL


@settings(max_examples=40, deadline=None)
@given(one_instance(people()), st.data())
def test_tie_does_not_excuse_another_keypoints_failure(picked, data):
    ref, i = picked
    j_tied, j_broken = data.draw(st.permutations(range(K)))[:2]
    keypoints = ref.keypoints.copy()
    keypoints[i, j_tied, 0] += 20.0
    keypoints[i, j_broken, 1] += 3.0
    gap = ref.keypoint_peak_gap.copy()
    gap[i, j_tied] = 0.0
    result = compare(copy_of(ref, peak_gap=gap), copy_of(ref, keypoints))
    assert result.verdict == Verdict.FAIL
    assert f"instance {i} keypoint {j_broken} ({COCO_KEYPOINT_NAMES[j_broken]})" in result.message


@settings(max_examples=40, deadline=None)
@given(one_keypoint(people()), st.data())
def test_nan_in_keypoints_fails(picked, data):
    ref, i, j = picked
    c = data.draw(st.integers(0, 2))
    side = data.draw(st.sampled_from(["reference", "candidate"]))
    keypoints = ref.keypoints.copy()
    keypoints[i, j, c] = math.nan
    broken = copy_of(ref, keypoints)
    result = compare(broken, ref) if side == "reference" else compare(ref, broken)
    assert result.verdict == Verdict.FAIL
    assert result.message.startswith(f"{side} instance {i} keypoint {j} ({COCO_KEYPOINT_NAMES[j]}) {'xys'[c]} is nan")


@settings(max_examples=30, deadline=None)
@given(one_keypoint(people()))
def test_changed_keypoint_score_fails(picked):
    ref, i, j = picked
    keypoints = ref.keypoints.copy()
    keypoints[i, j, 2] += 0.05
    result = compare(ref, copy_of(ref, keypoints))
    assert result.verdict == Verdict.FAIL
    assert f"instance {i} keypoint {j} ({COCO_KEYPOINT_NAMES[j]}): score" in result.message


def empty_people():
    return Instances(boxes=np.zeros((0, 4)), scores=np.zeros(0), keypoints=np.zeros((0, K, 3)))


def test_empty_against_empty_is_vacuous():
    assert compare(empty_people(), empty_people()).verdict == Verdict.VACUOUS
    assert compare(empty_people(), empty_people(), index_wise=True).verdict == Verdict.VACUOUS


def test_no_matched_instance_is_vacuous():
    ref = Instances(boxes=[[0, 0, 50, 50]], scores=[0.9], keypoints=np.full((1, K, 3), 10.0))
    cand = Instances(boxes=[[300, 300, 350, 350]], scores=[0.9], keypoints=np.full((1, K, 3), 310.0))
    assert compare(ref, cand).verdict == Verdict.VACUOUS


def test_index_wise_pairs_by_position_and_needs_equal_counts():
    rng = np.random.default_rng(0)
    keypoints = rng.uniform(0, 50, (3, K, 3))
    ref = Instances(boxes=np.tile([0, 0, 50, 50], (3, 1)), scores=[0.9, 0.8, 0.7], keypoints=keypoints)
    same = compare_keypoints(ref, ref, None, TOL, index_wise=True)
    assert same.verdict == Verdict.PASS
    swapped = compare_keypoints(ref, ref.select([1, 0, 2]), None, TOL, index_wise=True)
    assert swapped.verdict == Verdict.FAIL
    fewer = compare_keypoints(ref, ref.select([0, 1]), None, TOL, index_wise=True)
    assert fewer.verdict == Verdict.FAIL and "3 instances" in fewer.message


def test_keypoints_missing_on_one_side_fail():
    ref = Instances(boxes=[[0, 0, 50, 50]], scores=[0.9], keypoints=np.full((1, K, 3), 10.0))
    cand = Instances(boxes=[[0, 0, 50, 50]], scores=[0.9])
    assert compare(ref, cand).verdict == Verdict.FAIL


def test_invisible_keypoints_are_not_judged_on_position():
    keypoints = np.full((1, K, 3), 20.0)
    keypoints[0, 4, 2] = 0.01  # the reference barely sees keypoint 4
    ref = Instances(boxes=[[0, 0, 50, 50]], scores=[0.9], keypoints=keypoints)
    moved = keypoints.copy()
    moved[0, 4, 0] += 15
    cand = Instances(boxes=[[0, 0, 50, 50]], scores=[0.9], keypoints=moved)
    assert compare(ref, cand).verdict == Verdict.FAIL
    assert compare(ref, cand, visibility_threshold=0.2).verdict == Verdict.PASS


def test_oks_matches_the_coco_formula():
    distance = np.zeros((1, K))
    distance[0, 0] = 2.0
    area = np.array([2500.0])
    oks = object_keypoint_similarity(distance, area, COCO_SIGMAS, np.ones((1, K), dtype=bool))
    expected = (16 + math.exp(-(2.0**2) / (2 * 2500.0 * (2 * 0.026) ** 2))) / 17
    assert oks[0] == pytest.approx(expected)


def test_coco_tables_are_in_coco_order():
    assert len(COCO_SIGMAS) == len(COCO_KEYPOINT_NAMES) == 17
    assert COCO_KEYPOINT_NAMES[0] == "nose" and COCO_KEYPOINT_NAMES[9] == "left_wrist"
    assert COCO_SIGMAS[0] == pytest.approx(0.026) and COCO_SIGMAS[11] == pytest.approx(0.107)


def test_uses_the_box_matching_from_compare_boxes():
    rng = np.random.default_rng(1)
    ref = Instances(
        boxes=[[0, 0, 50, 50], [100, 0, 150, 50]], scores=[0.9, 0.8], keypoints=rng.uniform(0, 50, (2, K, 3))
    )
    cand = ref.select([1, 0])
    _, matching = compare_boxes(ref, cand, BOX_TOL)
    assert compare_keypoints(ref, cand, matching, TOL).verdict == Verdict.PASS


@settings(max_examples=20, deadline=None)
@given(one_keypoint(people()), st.floats(0.05, 5.0))
def test_the_candidates_own_peak_gaps_are_compared_not_only_read(picked, change):
    # keypoint-rcnn's peak-gap output was read from both sides but used from the reference
    # alone (for ties): the graph's value was never checked. Now it is, like a score.
    ref, i, j = picked
    gap = ref.keypoint_peak_gap.copy()
    gap[i, j] += change
    result = compare(ref, copy_of(ref, peak_gap=gap))
    assert result.verdict == Verdict.FAIL
    assert f"instance {i} keypoint {j}" in result.message and "best heatmap peak beats the second" in result.message
    assert compare(ref, copy_of(ref)).verdict == Verdict.PASS
