"""One image's structured comparison: boxes, then keypoints and masks over the same matching."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy_parity.compare.instances import Instances
from deploy_parity.compare.keypoints import COCO_KEYPOINT_NAMES
from deploy_parity.compare.structured import compare_instances
from deploy_parity.compare.tolerances import Tolerance, lookup
from deploy_parity.compare.verdict import Verdict, combine
from tests.instance_strategies import grid_layout, keypoints_inside, one_keypoint

CELL, K, ROI = 80, 17, 28
THRESHOLD = 0.3
BACKEND = {"backend": "onnxruntime", "precision": "fp32"}


@st.composite
def full_instances(draw, min_size=1, max_size=10):
    """Well-separated instances with labels, 17 keypoints, peak gaps and 28x28 soft masks."""
    rng, boxes = draw(grid_layout(min_size, max_size, cell=CELL))
    n = len(boxes)
    keypoints = keypoints_inside(rng, boxes, K)
    yy, xx = np.mgrid[0:ROI, 0:ROI]
    centre = rng.uniform(11, 17, (n, 2, 1, 1))
    radius = rng.uniform(6, 10, (n, 2, 1, 1))
    distance = np.sqrt(((yy - centre[:, 0]) / radius[:, 0]) ** 2 + ((xx - centre[:, 1]) / radius[:, 1]) ** 2)
    return Instances(
        boxes=boxes,
        scores=rng.uniform(0.6, 1.0, n),
        labels=rng.integers(0, 3, n),
        keypoints=keypoints,
        masks=(1.0 / (1.0 + np.exp((distance - 1.0) / 0.08))).astype(np.float32),
        keypoint_peak_gap=rng.uniform(0.01, 1.0, (n, K)),
    )


def rebuilt(inst, **changes):
    fields = {
        name: getattr(inst, name) for name in ("boxes", "scores", "labels", "keypoints", "masks", "keypoint_peak_gap")
    }
    fields = {name: (None if value is None else np.array(value, copy=True)) for name, value in fields.items()}
    fields.update(changes)
    return Instances(**fields)


def verdicts(comparisons):
    return {c.kind: c.verdict for c in comparisons}


@settings(max_examples=30, deadline=None)
@given(full_instances(), st.integers(0, 2**32 - 1))
def test_permuting_instance_order_passes_every_kind(ref, seed):
    cand = ref.select(np.random.default_rng(seed).permutation(len(ref)))
    comparisons = compare_instances(ref, cand, score_threshold=THRESHOLD, label="image 0", **BACKEND)
    assert verdicts(comparisons) == {"boxes": Verdict.PASS, "keypoints": Verdict.PASS, "masks": Verdict.PASS}
    assert [c.output for c in comparisons] == ["image 0 / boxes", "image 0 / keypoints", "image 0 / masks"]


@settings(max_examples=30, deadline=None)
@given(full_instances(), st.data())
def test_nan_anywhere_fails(ref, data):
    field = data.draw(st.sampled_from(["boxes", "scores", "keypoints", "masks"]))
    side = data.draw(st.sampled_from(["reference", "candidate"]))
    broken = rebuilt(ref)
    array = getattr(broken, field)
    index = tuple(data.draw(st.integers(0, size - 1)) for size in array.shape)
    array[index] = math.nan
    pair = (broken, ref) if side == "reference" else (ref, broken)
    comparisons = compare_instances(*pair, score_threshold=THRESHOLD, **BACKEND)
    assert combine(c.verdict for c in comparisons) == Verdict.FAIL
    kind = "boxes" if field in ("boxes", "scores") else field
    assert verdicts(comparisons)[kind] == Verdict.FAIL
    assert "nan" in next(c for c in comparisons if c.kind == kind).message


@settings(max_examples=30, deadline=None)
@given(one_keypoint(full_instances()), st.data())
def test_shifted_keypoint_fails_only_the_keypoints(picked, data):
    ref, i, j = picked
    keypoints = ref.keypoints.copy()
    keypoints[i, j, 1] += data.draw(st.floats(1.0, 30.0))
    cand = rebuilt(ref, keypoints=keypoints).select(np.array(data.draw(st.permutations(range(len(ref))))))
    comparisons = compare_instances(ref, cand, score_threshold=THRESHOLD, **BACKEND)
    assert verdicts(comparisons) == {"boxes": Verdict.PASS, "keypoints": Verdict.FAIL, "masks": Verdict.PASS}
    assert f"instance {i} keypoint {j} ({COCO_KEYPOINT_NAMES[j]})" in comparisons[1].message


def empty_instances():
    return Instances(
        boxes=np.zeros((0, 4)),
        scores=np.zeros(0),
        labels=np.zeros(0, dtype=int),
        keypoints=np.zeros((0, K, 3)),
        masks=np.zeros((0, ROI, ROI), np.float32),
    )


def test_empty_against_empty_is_vacuous_never_pass():
    comparisons = compare_instances(empty_instances(), empty_instances(), score_threshold=THRESHOLD, **BACKEND)
    assert [c.verdict for c in comparisons] == [Verdict.VACUOUS] * 3
    assert combine(c.verdict for c in comparisons) == Verdict.VACUOUS


def test_keypoints_or_masks_on_one_side_only_fail():
    base = Instances(boxes=[[0, 0, 50, 50]], scores=[0.9], labels=np.array([0]))
    with_keypoints = rebuilt(base, keypoints=np.full((1, K, 3), 20.0))
    with_masks = rebuilt(base, masks=np.ones((1, ROI, ROI), np.float32))
    assert verdicts(compare_instances(with_keypoints, base, **BACKEND)) == {
        "boxes": Verdict.PASS,
        "keypoints": Verdict.FAIL,
    }
    assert verdicts(compare_instances(base, with_masks, **BACKEND)) == {"boxes": Verdict.PASS, "masks": Verdict.FAIL}
    assert verdicts(compare_instances(base, base, **BACKEND)) == {"boxes": Verdict.PASS}


def test_each_kind_reports_its_own_tolerance_and_a_model_override():
    base = Instances(
        boxes=[[0, 0, 50, 50]], scores=[0.9], labels=np.array([0]), keypoints=np.full((1, K, 3), 20.0)
    )
    moved = rebuilt(base)
    moved.keypoints[0, 3, 0] += 2.0
    plain = compare_instances(base, moved, **BACKEND)
    assert plain[1].verdict == Verdict.FAIL
    assert plain[0].tolerance_source == lookup("boxes", "onnxruntime", "fp32").source
    assert plain[1].tolerance == dict(lookup("keypoints", "onnxruntime", "fp32").values)

    overrides = {"keypoints": Tolerance({"pixel": 3.0, "min_oks": 0.9}, "toy model: keypoints are coarse")}
    loose = compare_instances(base, moved, overrides=overrides, model="toy", **BACKEND)
    assert loose[1].verdict == Verdict.PASS
    assert "override by model toy" in loose[1].tolerance_source
    assert loose[1].tolerance["pixel"] == 3.0


def test_index_wise_keypoints_for_fixed_instance_outputs():
    base = Instances(
        boxes=[[0, 0, 50, 50], [0, 0, 50, 50]],
        scores=[0.9, 0.9],
        keypoints=np.stack([np.full((K, 3), 10.0), np.full((K, 3), 30.0)]),
    )
    swapped = base.select([1, 0])
    assert verdicts(compare_instances(base, base, index_wise_keypoints=True, **BACKEND))["keypoints"] == Verdict.PASS
    assert verdicts(compare_instances(base, swapped, index_wise_keypoints=True, **BACKEND))["keypoints"] == Verdict.FAIL
