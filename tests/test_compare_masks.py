"""Mask comparison: IoU, boundary flips and soft error over matched instances."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy_parity.compare.boxes import match_instances
from deploy_parity.compare.instances import Instances
from deploy_parity.compare.masks import compare_masks, mask_boundary
from deploy_parity.compare.tolerances import lookup
from deploy_parity.compare.verdict import Verdict
from tests.instance_strategies import grid_layout, one_instance

TOL = lookup("masks", "onnxruntime", "fp32")
ROI = 28  # per-ROI mask resolution, as Mask R-CNN's head


def soft_blobs(rng, n, height, width, centres, radii):
    """Soft elliptical blobs: ~1 inside, ~0 outside, a smooth ramp across the edge."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = centres[:, 0, None, None], centres[:, 1, None, None]
    ry, rx = radii[:, 0, None, None], radii[:, 1, None, None]
    distance = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    return (1.0 / (1.0 + np.exp((distance - 1.0) / 0.08))).astype(np.float32)


@st.composite
def segmented(draw, pasted=False, min_size=1, max_size=10):
    """Instances in distinct cells of a grid, each with a soft mask.

    pasted=False: per-ROI masks (R, 28, 28). pasted=True: masks pasted into a small
    image (R, 96, 96) whose 3 x 3 grid cells hold one blob each.
    """
    grid, cell = (3, 32) if pasted else (8, 80)
    rng, boxes = draw(grid_layout(min_size, max_size, grid=grid, cell=cell, margin=(1, 3), extent=(0.7, 0.85)))
    n = len(boxes)
    x1, y1, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if pasted:
        centres = np.stack([y1 + h / 2, x1 + w / 2], axis=1)
        masks = soft_blobs(rng, n, grid * cell, grid * cell, centres, np.stack([h / 2.5, w / 2.5], axis=1))
    else:
        centres = rng.uniform(11, 17, (n, 2))
        masks = soft_blobs(rng, n, ROI, ROI, centres, rng.uniform(6, 10, (n, 2)))
    return Instances(boxes=boxes, scores=rng.uniform(0.6, 1.0, n), labels=np.zeros(n, dtype=int), masks=masks)


def with_masks(inst, masks):
    return Instances(boxes=inst.boxes, scores=inst.scores, labels=inst.labels, masks=masks)


def compare(ref, cand, **kwargs):
    return compare_masks(ref, cand, match_instances(ref, cand), TOL, **kwargs)


seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=30, deadline=None)
@given(st.booleans().flatmap(lambda pasted: segmented(pasted=pasted)), seeds)
def test_permuting_instance_order_passes(ref, seed):
    cand = ref.select(np.random.default_rng(seed).permutation(len(ref)))
    result = compare(ref, cand)
    assert result.verdict == Verdict.PASS, result.message
    assert result.metrics["min_iou"] == 1.0 and result.metrics["max_soft_abs"] == 0.0


@settings(max_examples=30, deadline=None)
@given(st.booleans().flatmap(lambda pasted: segmented(pasted=pasted)), seeds)
def test_small_soft_noise_passes(ref, seed):
    rng = np.random.default_rng(seed)
    noisy = ref.masks + rng.uniform(-2e-4, 2e-4, ref.masks.shape).astype(np.float32)
    result = compare(ref, with_masks(ref, noisy).select(rng.permutation(len(ref))))
    assert result.verdict == Verdict.PASS, result.message


@settings(max_examples=30, deadline=None)
@given(one_instance(segmented()), st.data())
def test_shifted_mask_fails_naming_the_instance(picked, data):
    ref, i = picked
    masks = ref.masks.copy()
    masks[i] = np.roll(masks[i], data.draw(st.integers(2, 4)), axis=data.draw(st.integers(0, 1)))
    result = compare(ref, with_masks(ref, masks))
    assert result.verdict == Verdict.FAIL
    assert result.message.startswith(f"worst: instance {i}: mask IoU")
    assert result.metrics["worst_instance"] == i


@settings(max_examples=30, deadline=None)
@given(one_instance(segmented()), st.data())
def test_soft_error_beyond_tolerance_fails_even_without_flips(picked, data):
    ref, i = picked
    masks = ref.masks.copy()
    # Push one confidently-inside pixel down a little: nothing flips, the soft value does.
    inside = np.argwhere(masks[i] > 0.9)
    y, x = inside[data.draw(st.integers(0, len(inside) - 1))]
    masks[i, y, x] -= 0.01
    result = compare(ref, with_masks(ref, masks))
    assert result.verdict == Verdict.FAIL
    assert f"at pixel (y {y}, x {x})" in result.message


@settings(max_examples=30, deadline=None)
@given(one_instance(st.booleans().flatmap(lambda pasted: segmented(pasted=pasted))), st.data())
def test_nan_in_a_mask_fails(picked, data):
    ref, i = picked
    y = data.draw(st.integers(0, ref.masks.shape[1] - 1))
    x = data.draw(st.integers(0, ref.masks.shape[2] - 1))
    side = data.draw(st.sampled_from(["reference", "candidate"]))
    masks = ref.masks.copy()
    masks[i, y, x] = data.draw(st.sampled_from([math.nan, math.inf]))
    broken = with_masks(ref, masks)
    result = compare(broken, ref) if side == "reference" else compare(ref, broken)
    assert result.verdict == Verdict.FAIL
    assert result.message.startswith(f"{side} mask of instance {i} is")
    assert f"(y {y}, x {x})" in result.message


def blank(n, size=ROI, value=0.1):
    boxes = np.array([[100.0 * k, 0, 100.0 * k + 50, 50] for k in range(n)]).reshape(-1, 4)
    return Instances(boxes=boxes, scores=np.full(n, 0.9), masks=np.full((n, size, size), value, np.float32))


def test_empty_against_empty_is_vacuous():
    assert compare(blank(0), blank(0)).verdict == Verdict.VACUOUS
    # Instances present but every mask empty on both sides: still nothing to judge.
    assert compare(blank(3), blank(3)).verdict == Verdict.VACUOUS


def test_candidate_mask_where_the_reference_has_none_fails():
    cand = blank(2)
    cand.masks[1, 5:20, 5:20] = 0.9
    result = compare(blank(2), cand)
    assert result.verdict == Verdict.FAIL
    assert "instance 1" in result.message


def test_masks_missing_on_one_side_fail():
    ref = blank(1)
    cand = Instances(boxes=ref.boxes, scores=ref.scores)
    assert compare(ref, cand).verdict == Verdict.FAIL


def test_mask_size_mismatch_fails():
    assert compare(blank(1, 28), blank(1, 14)).verdict == Verdict.FAIL


def test_boundary_is_the_mask_pixels_with_a_4_neighbour_outside():
    mask = np.zeros((1, 6, 6), dtype=bool)
    mask[0, 1:5, 1:5] = True
    boundary = mask_boundary(mask)
    expected = mask.copy()
    expected[0, 2:4, 2:4] = False
    np.testing.assert_array_equal(boundary, expected)
    # Mask pixels on the image edge border the outside of the image.
    full = np.ones((1, 3, 3), dtype=bool)
    assert mask_boundary(full).sum() == 8


def test_boundary_disagreement_counts_flips_among_both_boundaries():
    ref = blank(1, 10, 0.0)
    ref.masks[0, 2:8, 2:8] = 1.0
    cand = blank(1, 10, 0.0)
    cand.masks[0, 2:8, 2:9] = 1.0  # one column wider
    result = compare(ref, cand, threshold=0.5)
    # Union of boundaries: ref ring (20 px) + cand ring (22 px) share 16 px -> 26 px;
    # the 6 px of the added column differ.
    assert result.metrics["max_boundary_disagreement"] == 6 / 26
    assert result.metrics["min_iou"] == 36 / 42


def test_boolean_masks_are_accepted():
    ref = blank(2, 16, 0.0)
    ref.masks[:, 4:12, 4:12] = 1.0
    boolean = with_masks(ref, ref.masks > 0.5)
    assert compare(boolean, boolean).verdict == Verdict.PASS
