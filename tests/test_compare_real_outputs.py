"""What real models emit, judged right: each misjudgment seen on real architectures
(torchvision R-CNNs and FCOS, Ultralytics YOLOv8 pose/seg), rebuilt from small synthetic
arrays. Each agreeing-to-rounding case must PASS (or be AMBIGUOUS where the reference
itself sits on a decision boundary), and each has a near-miss twin that must FAIL.
"""

import numpy as np
import pytest

from deploy_parity.adapters.nms import nms
from deploy_parity.compare.boxes import compare_boxes
from deploy_parity.compare.instances import Instances
from deploy_parity.compare.masks import compare_masks
from deploy_parity.compare.shift import PointDeltas, compare_systematic_shift
from deploy_parity.compare.structured import compare_instances
from deploy_parity.compare.tolerances import lookup
from deploy_parity.compare.verdict import Verdict, combine

BOX_TOL = lookup("boxes", "onnxrt-cpu", "fp32")
MASK_TOL = lookup("masks", "onnxrt-cpu", "fp32")


def judge(ref, cand, precision="fp32", **kwargs):
    comparisons = compare_instances(ref, cand, backend="onnxrt-cpu", precision=precision, **kwargs)
    return combine(c.verdict for c in comparisons), comparisons


def messages(comparisons):
    return " | ".join(c.message for c in comparisons)


def person(box, rng, k=17):
    x1, y1, x2, y2 = box
    xy = np.stack([rng.uniform(x1, x2, k), rng.uniform(y1, y2, k)], axis=1)
    return np.concatenate([xy, rng.uniform(20.0, 26.0, (k, 1))], axis=1)  # heatmap logits near 25


# ---- 1. unbounded scores ---------------------------------------------------------------


def _people_with_logit_scores(delta):
    rng = np.random.default_rng(0)
    boxes = np.array([[10.0, 20.0, 90.0, 200.0], [120.0, 15.0, 190.0, 210.0]])
    kps = np.stack([person(b, rng) for b in boxes])
    kps[0, 3, 2] = 24.1691
    ref = Instances(boxes=boxes, scores=[0.98, 0.91], labels=[1, 1], keypoints=kps)
    cand_kps = kps.copy()
    cand_kps[0, 3, 2] = 24.1691 + delta
    return ref, Instances(boxes=boxes, scores=[0.98, 0.91], labels=[1, 1], keypoints=cand_kps)


def test_logit_scores_near_25_agreeing_to_rounding_pass():
    verdict, comparisons = judge(*_people_with_logit_scores(24.1702 - 24.1691), score_threshold=0.5)
    assert verdict == Verdict.PASS, messages(comparisons)


def test_logit_score_off_by_a_real_amount_fails():
    verdict, comparisons = judge(*_people_with_logit_scores(0.08), score_threshold=0.5)
    assert verdict == Verdict.FAIL
    assert "score 24.1691 became 24.2491" in messages(comparisons)


# ---- 2. ties at the top-k cut and inside NMS -------------------------------------------


def _topk_with_different_last_box(cand_last_score):
    """Ten slots. Nine boxes agree; the reference's 10th is box A, the candidate's a
    different box B overlapping it (IoU 0.40) and a same-label neighbour."""
    rng = np.random.default_rng(1)
    base = np.array([[i * 60.0, 0.0, i * 60.0 + 50.0, 50.0] for i in range(9)])
    scores = np.sort(rng.uniform(0.3, 0.95, 9))[::-1]
    labels = rng.integers(1, 4, 9)
    box_a = [10.0, 100.0, 80.0, 170.0]
    box_b = [30.0, 100.0, 100.0, 170.0]  # IoU with A: 50*70 / (90*70) = 0.56 > MATCH_MIN_IOU
    ref = Instances(boxes=np.vstack([base, box_a]), scores=np.append(scores, 0.2974954),
                    labels=np.append(labels, 2))
    cand = Instances(boxes=np.vstack([base, box_b]), scores=np.append(scores, cand_last_score),
                     labels=np.append(labels, 2))
    return ref, cand


def test_different_boxes_tied_for_the_last_topk_slot_are_ambiguous():
    ref, cand = _topk_with_different_last_box(0.2974945)
    verdict, comparisons = judge(ref, cand, score_threshold=0.05, topk=10)
    assert verdict == Verdict.AMBIGUOUS, messages(comparisons)
    assert "score boundary" in comparisons[0].message


def test_a_confident_box_replaced_at_the_cut_fails():
    ref, cand = _topk_with_different_last_box(0.2974945)
    # The twin: the candidate also loses a confident box (slot 0) to a hallucination.
    cand.boxes[0] = [600.0, 300.0, 650.0, 350.0]
    verdict, comparisons = judge(ref, cand, score_threshold=0.05, topk=10)
    assert verdict == Verdict.FAIL
    assert "reference instance 0 " in comparisons[0].message


def test_matching_never_chains_wrong_pairs_to_pair_more_instances():
    # Three boxes in a row, each overlapping the next; the candidate lost the first and
    # gained a fourth. Optimal assignment by count would shift every pair by one
    # (IoU ~0.3 each); best-first pairs the identical boxes and leaves two leftovers.
    row = np.array([[0.0, 0.0, 100.0, 100.0], [60.0, 0.0, 160.0, 100.0], [120.0, 0.0, 220.0, 100.0],
                    [180.0, 0.0, 280.0, 100.0]])
    ref = Instances(boxes=row[:3], scores=[0.9, 0.8, 0.7], labels=[1, 1, 1])
    cand = Instances(boxes=row[1:], scores=[0.8, 0.7, 0.6], labels=[1, 1, 1])
    comparison, matching = compare_boxes(ref, cand, BOX_TOL, score_threshold=0.5)
    assert matching.pairs == [(1, 0), (2, 1)]
    assert comparison.verdict == Verdict.FAIL
    assert "reference instance 0 " in comparison.message  # the lost one, not a chain of bad pairs


def _nms_decoded(boxes, scores, order):
    """Decode like a detector with NMS inside the harness: the same boxes, presented in
    `order` (a backend whose kernel enumerates priors differently)."""
    boxes, scores = np.asarray(boxes)[order], np.asarray(scores)[order]
    kept = nms(boxes, scores, iou_threshold=0.5)
    return Instances(boxes=boxes[kept.keep], scores=scores[kept.keep], labels=np.ones(len(kept.keep), int),
                     extra={"nms_suppressed": kept.suppressed})


def test_nms_keeping_the_other_of_two_boxes_tied_at_one_is_ambiguous():
    boxes = [[0.0, 0.0, 100.0, 100.0], [8.0, 8.0, 108.0, 108.0], [300.0, 300.0, 380.0, 390.0]]
    scores = [1.0, 1.0, 0.8]  # sigmoid saturated: an exact tie
    ref = _nms_decoded(boxes, scores, [0, 1, 2])
    cand = _nms_decoded(boxes, scores, [1, 0, 2])
    assert not np.array_equal(ref.boxes[0], cand.boxes[0])  # they really kept different boxes
    verdict, comparisons = judge(ref, cand, score_threshold=0.3)
    assert verdict == Verdict.AMBIGUOUS, messages(comparisons)
    assert "NMS tie with reference instance 0" in comparisons[0].message


def test_nms_keeping_a_lower_scored_box_fails():
    boxes = [[0.0, 0.0, 100.0, 100.0], [8.0, 8.0, 108.0, 108.0], [300.0, 300.0, 380.0, 390.0]]
    ref = _nms_decoded(boxes, [1.0, 0.9, 0.8], [0, 1, 2])
    # The twin: no tie in the reference, yet the candidate kept the 0.9 box at score 1.0.
    cand = _nms_decoded(boxes, [0.9, 1.0, 0.8], [0, 1, 2])
    verdict, comparisons = judge(ref, cand, score_threshold=0.3)
    assert verdict == Verdict.FAIL
    assert "corner error 8 px" in comparisons[0].message


# ---- 3. mask pixels at the threshold ---------------------------------------------------


def _thin_box_masks(cand_value):
    """A 0.6-px-wide box: 18 of its 54 mask pixels have soft value exactly 0.5."""
    ref = np.zeros((1, 28, 28), np.float32)
    ref[0, 2:20, 10:13] = 0.9
    ref[0, 2:20, 12] = 0.5
    cand = ref.copy()
    cand[0, 2:20, 12] = cand_value
    return ref, cand


def test_mask_pixels_exactly_at_the_threshold_are_not_failures():
    ref_masks, cand_masks = _thin_box_masks(0.499999)
    inst = dict(boxes=[[10.0, 2.0, 10.6, 20.0]], scores=[0.9], labels=[1])
    verdict, comparisons = judge(Instances(**inst, masks=ref_masks), Instances(**inst, masks=cand_masks))
    assert verdict in (Verdict.PASS, Verdict.AMBIGUOUS), messages(comparisons)
    masks = comparisons[-1]
    assert masks.metrics["n_threshold_flips"] == 18 and masks.metrics["min_iou"] == 1.0


def test_mask_eroded_by_one_pixel_all_around_fails():
    ref_masks, _ = _thin_box_masks(0.5)
    big = np.zeros((1, 28, 28), np.float32)
    big[0, 4:24, 4:24] = 0.95
    eroded = np.zeros_like(big)
    eroded[0, 5:23, 5:23] = 0.95
    inst = dict(boxes=[[4.0, 4.0, 24.0, 24.0]], scores=[0.9], labels=[1])
    verdict, comparisons = judge(Instances(**inst, masks=big), Instances(**inst, masks=eroded))
    assert verdict == Verdict.FAIL
    assert "mask IoU 0.8100" in comparisons[-1].message


# ---- 4. zero-area boxes, 5. OKS of a zero-area instance --------------------------------


def _flat_person(move):
    rng = np.random.default_rng(3)
    box = np.array([[40.0, 30.0, 40.0, 130.0]])  # zero width: a person seen edge-on
    kps = person([40.0, 30.0, 40.0, 130.0], rng)[None]
    ref = Instances(boxes=box, scores=[0.88], labels=[1], keypoints=kps)
    cand = Instances(boxes=box + move, scores=[0.88], labels=[1], keypoints=kps + np.array([move, move, 0.0]))
    return ref, cand


def test_zero_area_box_and_its_keypoints_agreeing_to_rounding_pass():
    verdict, comparisons = judge(*_flat_person(1e-5), score_threshold=0.5)
    assert verdict == Verdict.PASS, messages(comparisons)
    boxes, keypoints = comparisons[0], comparisons[1]
    assert boxes.metrics["n_degenerate_pairs"] == 1
    assert keypoints.metrics["n_oks_not_judged"] == 1


def test_zero_area_box_moved_two_pixels_fails():
    verdict, comparisons = judge(*_flat_person(2.0), score_threshold=0.5)
    assert verdict == Verdict.FAIL
    assert "corner error 2 px" in comparisons[0].message
    assert "OKS not judged (zero-area box)" in comparisons[1].message


# ---- 6. soft masks from large logits ---------------------------------------------------


def _large_logit_masks(eroded):
    rng = np.random.default_rng(4)
    logits = np.full((1, 64, 64), -245.0)
    logits[0, 10:50, 12:52] = 245.0
    logits[0, 9, 12:52] = 0.3  # a soft edge row (0.57) where sigmoid has its slope
    ref = 1.0 / (1.0 + np.exp(-logits))
    # fp32 rounding of a sum of 32 products of size ~245 moves the logit by ~8e-3:
    # sigmoid moves up to 2e-3 on the edge row, nothing flips.
    cand = 1.0 / (1.0 + np.exp(-(logits + rng.uniform(-8e-3, 8e-3, logits.shape))))
    if eroded:
        cand[0, 10, 12:52] = cand[0, 49, 12:52] = 0.0
        cand[0, 10:50, 12] = cand[0, 10:50, 51] = 0.0
    inst = dict(boxes=[[12.0, 9.0, 52.0, 50.0]], scores=[0.93], labels=[1])
    return Instances(**inst, masks=ref.astype(np.float32)), Instances(**inst, masks=cand.astype(np.float32))


def test_soft_masks_from_large_logits_agreeing_in_every_pixel_pass():
    verdict, comparisons = judge(*_large_logit_masks(eroded=False))
    assert verdict == Verdict.PASS, messages(comparisons)
    assert 1e-3 < comparisons[-1].metrics["max_soft_abs"] <= MASK_TOL["soft_abs"]


def test_soft_masks_from_large_logits_eroded_fail():
    verdict, comparisons = judge(*_large_logit_masks(eroded=True))
    assert verdict == Verdict.FAIL


# ---- 7. systematic offsets -------------------------------------------------------------


def _wide_boxes_and_people(shift_x, noise, seed=5):
    rng = np.random.default_rng(seed)
    n = 12
    x1 = rng.uniform(0, 300, n)
    y1 = rng.uniform(0, 300, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(210, 400, n), y1 + rng.uniform(210, 400, n)], axis=1)
    kps = np.stack([person(b, rng) for b in boxes])
    kps[..., 2] = rng.uniform(0.5, 1.0, kps.shape[:2])
    ref = Instances(boxes=boxes, scores=rng.uniform(0.5, 1.0, n), labels=np.ones(n, int), keypoints=kps)
    cand_boxes = boxes + rng.normal(0, noise, boxes.shape) + np.array([shift_x, 0.0, shift_x, 0.0])
    cand_kps = kps + np.concatenate([rng.normal(0, noise, kps[..., :2].shape) + [shift_x, 0.0],
                                     np.zeros(kps[..., :1].shape)], axis=-1)
    cand = Instances(boxes=cand_boxes, scores=ref.scores, labels=ref.labels, keypoints=cand_kps)
    return ref, cand


def _judge_with_shift(ref, cand, precision):
    deltas = PointDeltas()
    comparisons = compare_instances(ref, cand, backend="onnxrt-cpu", precision=precision, score_threshold=0.3,
                                    deltas=deltas)
    shift = compare_systematic_shift(deltas, lookup("shift", "onnxrt-cpu", precision))
    return comparisons, shift


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_half_pixel_shift_in_x_fails_with_the_systematic_shift_message(precision):
    ref, cand = _wide_boxes_and_people(0.5, noise=1e-4)
    comparisons, shift = _judge_with_shift(ref, cand, precision)
    assert shift.verdict == Verdict.FAIL
    assert "systematic shift +0.50 px in x over 228 points" in shift.message  # 24 corners + 204 keypoints
    if precision == "fp16":
        # Under the fp16 rows every point stays within its own limit: only the shift check sees it.
        assert all(c.verdict == Verdict.PASS for c in comparisons), messages(comparisons)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_rounding_scatter_has_no_systematic_shift(precision):
    noise = {"fp32": 1e-4, "fp16": 0.15}[precision]  # fp16: spacing 0.25-0.5 px at these coordinates
    ref, cand = _wide_boxes_and_people(0.0, noise=noise)
    comparisons, shift = _judge_with_shift(ref, cand, precision)
    assert shift.verdict == Verdict.PASS, shift.message
    assert all(c.verdict == Verdict.PASS for c in comparisons), messages(comparisons)


# ---- NMS IoU threshold (seen on an H200: mask-rcnn under fp16) ---------------------------


def _extra_box_at_iou(iou_target_box):
    kept = [0.0, 0.5, 37.8, 85.6]
    ref = Instances(boxes=[kept], scores=[0.987], labels=[1])
    cand = Instances(boxes=[kept, iou_target_box], scores=[0.987, 0.40], labels=[1, 1])
    return ref, cand


def test_box_kept_at_the_nms_iou_threshold_on_one_side_is_ambiguous():
    # IoU with the kept box is 0.501: fp32 suppressed it (> 0.5), fp16 rounding kept it.
    ref, cand = _extra_box_at_iou([0.0, 7.9, 67.4, 90.6])
    verdict, comparisons = judge(ref, cand, precision="fp16", score_threshold=0.3, nms_iou_threshold=0.5)
    assert verdict == Verdict.AMBIGUOUS, messages(comparisons)
    assert "NMS IoU threshold 0.5" in comparisons[0].message


def test_extra_box_far_from_the_nms_iou_threshold_fails():
    ref, cand = _extra_box_at_iou([0.0, 30.0, 37.8, 140.0])  # IoU ~0.4 with the kept box
    verdict, comparisons = judge(ref, cand, precision="fp16", score_threshold=0.3, nms_iou_threshold=0.5)
    assert verdict == Verdict.FAIL
    verdict, _ = judge(*_extra_box_at_iou([0.0, 7.9, 67.4, 90.6]), precision="fp16", score_threshold=0.3)
    assert verdict == Verdict.FAIL  # without the model's NMS threshold there is no evidence
