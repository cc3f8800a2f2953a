"""The Ultralytics adapter (deploy_parity/adapters/ultralytics.py) on small synthetic arrays,
checked against values worked out by hand, then against Ultralytics' own postprocessing
on the zoo's trained models (skipped when ultralytics is not installed).

The hand-worked raw detect example, nc = 2, five anchors (cx cy w h; class scores):
  a0 (50, 50, 20, 40; .9 .1)  -> [40 30 60 70], .9, class 0: kept first
  a1 (52, 50, 20, 40; .8 .2)  -> [42 30 62 70], IoU with a0 = 720/880 = .818 > .7, same
                                 class: suppressed by a0 (kept position 0)
  a2 (52, 50, 20, 40; .1 .85) -> the same box, class 1: kept (class-aware NMS)
  a3 (150, 100, 10, 10; .25 0) -> score == conf .25: not a candidate (Ultralytics: > conf)
  a4 (150, 100, 10, 10; .3 .2) -> [145 95 155 105], .3, class 0: kept third
"""

from __future__ import annotations

import numpy as np
import pytest

from deploy_parity import adapters
from deploy_parity.adapters.ultralytics import UltralyticsYOLO, crop_masks
from deploy_parity.compare.structured import compare_instances
from deploy_parity.compare.verdict import Verdict
from deploy_parity.errors import ModelCaseError


def raw(columns):
    """output0 of one image, (1, C, N) float32, from per-anchor columns."""
    return np.asarray(columns, dtype=np.float32).T[None]


DETECT = raw([
    [50, 50, 20, 40, 0.9, 0.1],
    [52, 50, 20, 40, 0.8, 0.2],
    [52, 50, 20, 40, 0.1, 0.85],
    [150, 100, 10, 10, 0.25, 0.0],
    [150, 100, 10, 10, 0.3, 0.2],
])


def test_exported_from_the_adapters_package():
    assert adapters.UltralyticsYOLO is UltralyticsYOLO


def test_raw_detect_decodes_as_worked_out_by_hand():
    adapter = UltralyticsYOLO("detect", num_classes=2)
    inst = adapter.to_instances({"output0": DETECT}, 0, (200, 200))
    np.testing.assert_allclose(inst.boxes, [[40, 30, 60, 70], [42, 30, 62, 70], [145, 95, 155, 105]])
    np.testing.assert_allclose(inst.scores, [0.9, 0.85, 0.3], rtol=1e-6)
    assert inst.labels.tolist() == [0, 1, 0]
    suppressed = inst.extra["nms_suppressed"]
    np.testing.assert_allclose(suppressed["boxes"], [[42, 30, 62, 70]])
    np.testing.assert_allclose(suppressed["scores"], [0.8], rtol=1e-6)
    assert suppressed["by"].tolist() == [0]  # position among the kept instances
    assert (adapter.score_threshold, adapter.topk) == (0.25, 300)
    assert [(o.name, o.kind) for o in adapter.outputs] == [("output0", "boxes")]


def test_raw_detect_agnostic_nms_and_max_det():
    agnostic = UltralyticsYOLO("detect", agnostic=True).to_instances({"output0": DETECT}, 0, (200, 200))
    np.testing.assert_allclose(agnostic.boxes, [[40, 30, 60, 70], [145, 95, 155, 105]])
    assert agnostic.extra["nms_suppressed"]["by"].tolist() == [0, 0]  # a1 and a2, both by a0
    capped = UltralyticsYOLO("detect", max_det=2)
    inst = capped.to_instances({"output0": DETECT}, 0, (200, 200))
    np.testing.assert_allclose(inst.scores, [0.9, 0.85], rtol=1e-6)
    assert capped.topk == 2  # a side keeping max_det had to cut: the comparator's top-k boundary
    # The conf is strict: a threshold just under a3's .25 makes it a candidate (and a4 suppresses it).
    low = UltralyticsYOLO("detect", score_threshold=0.2499).to_instances({"output0": DETECT}, 0, (200, 200))
    assert len(low) == 3 and low.extra["nms_suppressed"]["scores"].round(4).tolist() == [0.8, 0.25]


def test_raw_pose_keypoints_per_kept_instance():
    # K = 2 keypoints (x y visibility), nc = 1: channels 4 + 1 + 6.
    output = raw([
        [50, 50, 20, 40, 0.9, 10, 20, 0.7, 30, 40, 0.2],
        [120, 50, 20, 40, 0.1, 1, 2, 0.5, 3, 4, 0.5],  # below conf
    ])
    inst = UltralyticsYOLO("pose", kpt_shape=(2, 3)).to_instances({"output0": output}, 0, (100, 160))
    assert len(inst) == 1
    np.testing.assert_allclose(inst.keypoints, [[[10, 20, 0.7], [30, 40, 0.2]]], rtol=1e-6)
    # Without a visibility channel, every keypoint scores 1.
    two = UltralyticsYOLO("pose", kpt_shape=(3, 2)).to_instances({"output0": output}, 0, (100, 160))
    np.testing.assert_allclose(two.keypoints, [[[10, 20, 1], [0.7, 30, 1], [40, 0.2, 1]]], rtol=1e-6)


def test_raw_segment_masks_are_soft_and_cropped_at_prototype_resolution():
    # Input 16x16, prototypes 4x4 (ratio 4), 2 mask channels: coefficients (1, -1) on
    # prototypes (2, 0) give logit 2 everywhere, sigmoid 0.8808. Box [4 4 10 14] is
    # [1 1 2.5 3.5] on the prototype grid.
    output = raw([[7, 9, 6, 10, 0.9, 1.0, -1.0]])
    proto = np.stack([np.full((4, 4), 2.0), np.zeros((4, 4))]).astype(np.float32)[None]
    value = 1 / (1 + np.exp(-2.0))
    adapter = UltralyticsYOLO("segment", num_masks=2)
    assert [(o.name, o.kind) for o in adapter.outputs] == [("output0", "boxes"), ("output1", "masks")]
    inst = adapter.to_instances({"output0": output, "output1": proto}, 0, (16, 16))
    np.testing.assert_allclose(inst.boxes, [[4, 4, 10, 14]])
    rows, cols = np.array([0, 1, 1, 0.5]), np.array([0, 1, 0.5, 0])  # covered fraction of each row / column
    np.testing.assert_allclose(inst.masks, [value * rows[:, None] * cols[None, :]], rtol=1e-12)
    hard = UltralyticsYOLO("segment", num_masks=2, crop="hard").to_instances({"output0": output, "output1": proto},
                                                                             0, (16, 16))
    keep = np.zeros((4, 4))
    keep[1:4, 1:3] = 1  # rows 1 <= r < 3.5, columns 1 <= c < 2.5
    np.testing.assert_allclose(hard.masks, [value * keep])


def test_coverage_crop_is_continuous_where_the_hard_crop_steps():
    masks = np.ones((1, 4, 8))
    below, above = np.array([[2 - 1e-6, 0, 6, 4]]), np.array([[2 + 1e-6, 0, 6, 4]])
    assert np.abs(crop_masks(masks, below, "hard") - crop_masks(masks, above, "hard")).max() == 1.0
    assert np.abs(crop_masks(masks, below) - crop_masks(masks, above)).max() == pytest.approx(1e-6)


def test_end2end_rows_above_conf():
    # (max_det, 6 + 6): x1 y1 x2 y2 score class, K = 2 keypoints; zero padding rows last.
    det = np.zeros((1, 5, 12), dtype=np.float32)
    det[0, 0] = [40, 30, 60, 70, 0.9, 0, 10, 20, 0.7, 30, 40, 0.2]
    det[0, 1] = [140, 30, 160, 70, 0.25, 0, 1, 2, 0.5, 3, 4, 0.5]  # score == conf: dropped
    det[0, 2] = [1, 2, 3, 4, 0.3, 0, 5, 6, 0.9, 7, 8, 0.9]
    inst = UltralyticsYOLO("pose", form="end2end", kpt_shape=(2, 3)).to_instances({"output0": det}, 0, (100, 200))
    np.testing.assert_allclose(inst.boxes, [[40, 30, 60, 70], [1, 2, 3, 4]])
    np.testing.assert_allclose(inst.keypoints[0], [[10, 20, 0.7], [30, 40, 0.2]], rtol=1e-6)
    assert inst.labels.tolist() == [0, 0] and "nms_suppressed" not in inst.extra


def test_layout_errors_name_the_problem():
    with pytest.raises(ModelCaseError, match="leaves 1 class channels, expected 2"):
        UltralyticsYOLO("detect", num_classes=2).to_instances({"output0": DETECT[:, :5]}, 0, (200, 200))
    with pytest.raises(ModelCaseError, match=r"expected \(max_det, 57\)"):
        UltralyticsYOLO("pose", form="end2end").to_instances({"output0": np.zeros((1, 5, 6))}, 0, (64, 64))
    with pytest.raises(ModelCaseError, match="task 'obb' not in"):
        UltralyticsYOLO("obb")


def test_named_outputs_unwrap_every_form_a_module_returns():
    torch = pytest.importorskip("torch")
    y, proto, raw_preds = torch.zeros(1, 56, 10), torch.zeros(1, 32, 4, 4), {"boxes": torch.zeros(1)}
    pose, seg = UltralyticsYOLO("pose"), UltralyticsYOLO("segment")
    for result in ((y, raw_preds), y):  # eval mode; export mode (and NMSModel)
        assert pose.named_outputs(result)["output0"] is y
    for result in (((y, proto), raw_preds), (y, proto)):  # eval mode; export mode / NMSModel
        named = seg.named_outputs(result)
        assert named["output0"] is y and named["output1"] is proto
    assert pose.named_outputs({"output0": y})["output0"] is y
    with pytest.raises(ModelCaseError, match=r"returned 1 tensor\(s\) \[\(1, 56, 10\)\], the segment format has 2"):
        seg.named_outputs((y, raw_preds))


# ------------------------------------------------------------------ ties in NMS


def test_equal_scores_keep_the_lower_anchor_every_time():
    # Two identical boxes with identical scores at anchors 1 and 3; anchor order is the tie-break.
    columns = [[20, 20, 8, 8, 0.6], [50, 50, 20, 20, 0.7], [90, 20, 8, 8, 0.4], [50, 50, 20, 20, 0.7]]
    output = raw(columns)
    adapter = UltralyticsYOLO("detect")
    first = adapter.to_instances({"output0": output}, 0, (100, 100))
    for _ in range(3):
        again = adapter.to_instances({"output0": output}, 0, (100, 100))
        np.testing.assert_array_equal(again.boxes, first.boxes)
        np.testing.assert_array_equal(again.extra["nms_suppressed"]["by"], first.extra["nms_suppressed"]["by"])
    np.testing.assert_allclose(first.scores, [0.7, 0.6, 0.4], rtol=1e-6)
    assert first.extra["nms_suppressed"]["by"].tolist() == [0]
    # With the tied pair told apart (slightly different boxes), the lower anchor's box wins.
    columns[3][0] = 51
    kept = adapter.to_instances({"output0": raw(columns)}, 0, (100, 100))
    np.testing.assert_allclose(kept.boxes[0], [40, 40, 60, 60])
    np.testing.assert_allclose(kept.extra["nms_suppressed"]["boxes"], [[41, 40, 61, 60]])


def _tie_outputs(score_a: float, score_b: float):
    """Two overlapping people A and B (IoU .818, one suppresses the other) and a
    well-separated third at C; the scores of A and B as given."""
    return raw([
        [50, 50, 20, 40, score_a],
        [52, 50, 20, 40, score_b],
        [150, 60, 16, 30, 0.7],
    ])


@pytest.mark.parametrize("gap, verdict", [(5e-5, Verdict.AMBIGUOUS), (1e-2, Verdict.FAIL)],
                         ids=["tie-within-margin", "near-miss-beyond-margin"])
def test_a_backend_keeping_the_other_of_two_tied_boxes(gap, verdict):
    """The reference's scores put A a hair above B, so its NMS keeps A; the candidate's
    rounding puts B above A and keeps B. Within the ambiguity margin (2e-4) that is an
    NMS tie, AMBIGUOUS with the tie as evidence; the same swap with a 1e-2 score gap is
    a real difference and fails."""
    adapter = UltralyticsYOLO("detect")
    ref = adapter.to_instances({"output0": _tie_outputs(0.8, 0.8 - gap)}, 0, (120, 200))
    cand = adapter.to_instances({"output0": _tie_outputs(0.8 - gap, 0.8)}, 0, (120, 200))
    np.testing.assert_allclose(ref.boxes[0], [40, 30, 60, 70])
    np.testing.assert_allclose(cand.boxes[0], [42, 30, 62, 70])
    comparisons = compare_instances(ref, cand, backend="onnxrt-cpu", precision="fp32",
                                    score_threshold=adapter.score_threshold, topk=adapter.topk)
    [boxes] = comparisons
    assert boxes.verdict == verdict, boxes.message
    if verdict == Verdict.AMBIGUOUS:
        assert "NMS" in boxes.message and "reference instance 0" in boxes.message
        [evidence] = boxes.evidence["ambiguous"]
        assert evidence["suppressed_box"] == [42.0, 30.0, 62.0, 70.0]
    else:
        assert "IoU 0.8182" in boxes.message


# ------------------------------------------------------------------ against Ultralytics itself


@pytest.fixture(scope="module")
def ultralytics_models():
    pytest.importorskip("ultralytics")
    import torch

    from models import yolo_common

    torch.set_num_threads(1)
    return {"pose": yolo_common.load_trained(yolo_common.POSE), "segment": yolo_common.load_trained(yolo_common.SEG)}


def _scene_batch(height, width, seed=3):
    import torch

    from deploy_parity.scenes.feeds import scene_images

    images, _ = scene_images(height, width, 1, seed, min_people=2, max_people=3)
    return torch.from_numpy(images).float() / 255.0


def test_raw_decoding_matches_ultralytics_non_max_suppression(ultralytics_models):
    import torch
    from ultralytics.utils import ops
    from ultralytics.utils.nms import non_max_suppression

    for task, model in ultralytics_models.items():
        images = _scene_batch(128, 160)
        with torch.no_grad():
            result = model(images)
        adapter = UltralyticsYOLO(task, num_classes=len(model.names), crop="hard")
        outputs = {k: v.numpy() for k, v in adapter.named_outputs(result).items()}
        inst = adapter.to_instances(outputs, 0, (128, 160))
        [theirs] = non_max_suppression(torch.from_numpy(outputs["output0"]), 0.25, 0.7, nc=len(model.names))
        assert len(inst) == len(theirs) > 0, task
        np.testing.assert_allclose(inst.boxes, theirs[:, :4].numpy(), atol=1e-4)
        np.testing.assert_allclose(inst.scores, theirs[:, 4].numpy(), rtol=1e-6)
        assert inst.labels.tolist() == theirs[:, 5].long().tolist()
        if task == "pose":
            np.testing.assert_allclose(inst.keypoints.reshape(len(inst), -1), theirs[:, 6:].numpy(), atol=1e-4)
        else:
            proto = torch.from_numpy(outputs["output1"][0])
            binary = ops.process_mask(proto, theirs[:, 6:], theirs[:, :4], (128, 160), upsample=False)
            np.testing.assert_array_equal(inst.masks > 0.5, binary.numpy().astype(bool))


def test_end2end_form_reads_ultralytics_nms_export_like_the_raw_form(ultralytics_models):
    """Ultralytics' nms=True export wraps the export-mode model in NMSModel, (B, max_det,
    6 + E) [+ prototypes]: read as end2end, it gives what the raw form gives."""
    import torch
    from types import SimpleNamespace

    from ultralytics.engine.exporter import NMSModel

    from models.yolo_common import export_form

    for task, model in ultralytics_models.items():
        images = _scene_batch(160, 128, seed=5)
        deploy = export_form(model)
        with torch.no_grad():
            raw_outputs = deploy(images)
            deploy.model[-1].xyxy = True  # what the exporter sets for nms=True
            args = SimpleNamespace(conf=0.25, iou=0.7, max_det=300, agnostic_nms=False, dynamic=False, batch=1,
                                   format="onnx", opset=None)
            e2e_outputs = NMSModel(deploy, args)(images)
        raw_adapter = UltralyticsYOLO(task, num_classes=len(model.names))
        e2e_adapter = UltralyticsYOLO(task, form="end2end", num_classes=len(model.names))
        as_numpy = lambda named: {k: v.numpy() for k, v in named.items()}  # noqa: E731
        raw_inst = raw_adapter.to_instances(as_numpy(raw_adapter.named_outputs(raw_outputs)), 0, (160, 128))
        e2e_inst = e2e_adapter.to_instances(as_numpy(e2e_adapter.named_outputs(e2e_outputs)), 0, (160, 128))
        assert len(raw_inst) == len(e2e_inst) > 0, task
        np.testing.assert_allclose(e2e_inst.boxes, raw_inst.boxes, atol=1e-4)
        np.testing.assert_allclose(e2e_inst.scores, raw_inst.scores, rtol=1e-6)
        if task == "pose":
            np.testing.assert_allclose(e2e_inst.keypoints, raw_inst.keypoints, atol=1e-4)
        else:
            np.testing.assert_allclose(e2e_inst.masks, raw_inst.masks, atol=1e-6)
