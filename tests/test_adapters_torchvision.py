"""deploy_parity.adapters.TorchvisionDetection: torchvision's detection outputs read into
Instances, from the eager list of per-image dicts and from an exported graph's flat
outputs (small synthetic arrays), and on real tiny torchvision models (dict orders,
for_model, a user's own export through ONNX Runtime)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploy_parity import ModelCase, SizeSpace, InputSpec, adapters
from deploy_parity.adapters.torchvision import ORDERS, TorchvisionDetection
from deploy_parity.errors import ModelCaseError
from deploy_parity.export.onnx_exporter import _flat_outputs_module

R, K, H, W = 3, 17, 40, 60


def detections(rng=np.random.default_rng(0), r=R, masks=False, keypoints=False):
    """One image's torchvision detections as numpy arrays, in the R-CNN dict order."""
    xy = rng.uniform(0, 30, (r, 2))
    out = {"boxes": np.concatenate([xy, xy + rng.uniform(1, 20, (r, 2))], 1).astype(np.float32),
           "labels": rng.integers(1, 4, r).astype(np.int64),
           "scores": rng.uniform(0.3, 1, r).astype(np.float32)}
    if masks:
        out["masks"] = rng.uniform(0, 1, (r, 1, H, W)).astype(np.float32)
    if keypoints:
        out["keypoints"] = np.concatenate([rng.uniform(0, 50, (r, K, 2)), np.ones((r, K, 1))], -1).astype(np.float32)
        out["keypoints_scores"] = rng.normal(0, 8, (r, K)).astype(np.float32)
    return out


# ------------------------------------------------------------------ declared outputs


def test_outputs_follow_torchvisions_dict_orders():
    assert TorchvisionDetection().output_names == ["boxes", "labels", "scores"]
    assert TorchvisionDetection(order="single-stage").output_names == ["boxes", "scores", "labels"]
    assert TorchvisionDetection(masks=True).output_names == ["boxes", "labels", "scores", "masks"]
    keypoints = TorchvisionDetection(keypoints=True, keypoint_peak_gap="gap")
    assert keypoints.output_names == ["boxes", "labels", "scores", "keypoints", "keypoints_scores", "gap"]
    assert [o.kind for o in keypoints.outputs] == ["boxes", "labels", "scores", "keypoints", "keypoints", "keypoints"]


def test_bad_combinations_are_named():
    with pytest.raises(ModelCaseError, match="order 'ssd' not in"):
        TorchvisionDetection(order="ssd")
    with pytest.raises(ModelCaseError, match="masks and keypoints come from the R-CNNs"):
        TorchvisionDetection(order="single-stage", keypoints=True)
    with pytest.raises(ModelCaseError, match="keypoint_peak_gap belongs to keypoints"):
        TorchvisionDetection(keypoint_peak_gap="gap")


def test_judging_defaults_come_from_the_adapter():
    case = ModelCase(name="tv", build_reference=lambda: None, inputs=(InputSpec("images", "image", ("float32",)),),
                     sizes=SizeSpace(96, 224), adapter=adapters.TorchvisionDetection(score_threshold=0.7, topk=5))
    assert (case.score_threshold, case.topk) == (0.7, 5)
    assert case.output_names == ["boxes", "labels", "scores"]


# ------------------------------------------------------------------ named_outputs


def as_torch(d):
    return {k: torch.from_numpy(v) for k, v in d.items()}


def test_named_outputs_reads_the_eager_list_of_one_dict():
    adapter = TorchvisionDetection(keypoints=True)
    dets = as_torch(detections(keypoints=True))
    named = adapter.named_outputs([dets])
    assert list(named) == adapter.output_names
    assert all(named[k] is dets[k] for k in named)
    assert adapter.named_outputs(dets).keys() == named.keys()  # one image's dict
    assert list(adapter.named_outputs(({}, [dets]))) == adapter.output_names  # scripted: (losses, detections)


def test_named_outputs_reads_flat_outputs_in_dict_order():
    adapter = TorchvisionDetection(order="single-stage")
    boxes, scores, labels = torch.zeros(2, 4), torch.ones(2), torch.full((2,), 3)
    named = adapter.named_outputs((boxes, scores, labels))
    assert named["scores"] is scores and named["labels"] is labels
    with pytest.raises(ModelCaseError, match=r"2 flat outputs, the format has 3 \(boxes, scores, labels\)"):
        adapter.named_outputs((boxes, scores))


def test_named_outputs_refuses_batches_and_missing_heads():
    adapter = TorchvisionDetection(masks=True)
    dets = as_torch(detections(masks=True))
    with pytest.raises(ModelCaseError, match="detections for 2 images; torchvision detection exports take one image"):
        adapter.named_outputs([dets, dets])
    plain = as_torch(detections())
    with pytest.raises(ModelCaseError, match=r"have no \['masks'\]"):
        adapter.named_outputs([plain])


# ------------------------------------------------------------------ to_instances


def test_to_instances_reads_one_image_without_a_batch_axis():
    adapter = TorchvisionDetection(masks=True, keypoints=True)
    out = detections(masks=True, keypoints=True)
    inst = adapter.to_instances(out, 0, (H, W))
    assert len(inst) == R and inst.image_size == (H, W)
    np.testing.assert_array_equal(inst.boxes, out["boxes"])
    np.testing.assert_array_equal(inst.scores, out["scores"])
    np.testing.assert_array_equal(inst.labels, out["labels"])
    assert inst.masks.shape == (R, H, W)
    np.testing.assert_array_equal(inst.masks, out["masks"][:, 0])
    # x, y from keypoints; the score column is keypoints_scores (torchvision's third column is visibility).
    assert inst.keypoints.shape == (R, K, 3)
    np.testing.assert_array_equal(inst.keypoints[..., :2], out["keypoints"][..., :2])
    np.testing.assert_array_equal(inst.keypoints[..., 2], out["keypoints_scores"])
    assert inst.keypoint_peak_gap is None


def test_to_instances_reads_the_peak_gap_when_a_wrapper_adds_one():
    adapter = TorchvisionDetection(keypoints=True, keypoint_peak_gap="keypoint_peak_gap")
    out = dict(detections(keypoints=True), keypoint_peak_gap=np.full((R, K), 0.5, np.float32))
    assert adapter.to_instances(out, 0, (H, W)).keypoint_peak_gap.shape == (R, K)


def test_to_instances_of_no_detections():
    adapter = TorchvisionDetection(masks=True, keypoints=True)
    empty = detections(r=0, masks=True, keypoints=True)
    inst = adapter.to_instances(empty, 0, (H, W))
    assert len(inst) == 0 and inst.keypoints.shape == (0, K, 3) and inst.masks.shape == (0, H, W)


def test_to_instances_refuses_a_second_sample():
    with pytest.raises(ModelCaseError, match="sample 1 asked for, but torchvision's outputs hold one image"):
        TorchvisionDetection().to_instances(detections(), 1, (H, W))


# ------------------------------------------------------------------ real tiny torchvision models


def tiny_models():
    """Untrained torchvision detectors with the zoo's tiny backbone, one of each kind."""
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.retinanet import RetinaNetHead

    from models import keypoint_rcnn, mask_rcnn, tv_fcos

    torch.manual_seed(0)
    retinanet = RetinaNet(keypoint_rcnn.tiny_backbone(), 3, min_size=96, max_size=128,
                          anchor_generator=AnchorGenerator(((32,),), ((1.0,),)),
                          head=RetinaNetHead(keypoint_rcnn.BACKBONE_CHANNELS, 1, 3), score_thresh=0.0,
                          detections_per_img=7)
    return {"keypoint": keypoint_rcnn.build_detector(), "mask": mask_rcnn.build_detector(),
            "fcos": tv_fcos.build_detector(), "retinanet": retinanet}


def test_for_model_and_the_dict_order_of_each_kind_of_torchvision_detector():
    image = torch.rand(1, 3, 96, 112, generator=torch.Generator().manual_seed(1))
    expected = {"keypoint": ("rcnn", False, True, 0.3, 10), "mask": ("rcnn", True, False, 0.3, 10),
                "fcos": ("single-stage", False, False, 0.3, 10), "retinanet": ("single-stage", False, False, 0.0, 7)}
    for name, model in tiny_models().items():
        adapter = TorchvisionDetection.for_model(model)
        order, masks, keypoints, threshold, topk = expected[name]
        assert (adapter.order, adapter.has_masks, adapter.has_keypoints) == (order, masks, keypoints), name
        assert (adapter.score_threshold, adapter.topk) == pytest.approx((threshold, topk)), name
        with torch.inference_mode():
            result = model.eval()(image)
        assert list(result[0]) == adapter.output_names, name  # torchvision's own dict order
        assert list(result[0])[:3] == list(ORDERS[order])
    with pytest.raises(ModelCaseError, match="not a torchvision detector"):
        TorchvisionDetection.for_model(torch.nn.Conv2d(3, 3, 1))


def test_a_users_own_export_of_a_trained_keypoint_rcnn_reads_like_eager(tmp_path):
    """What a user does: torch.onnx.export of the torchvision model itself, outputs named
    as the adapter names them (torchvision's dict order). ONNX Runtime's flat outputs,
    read through named_outputs, give the eager model's instances."""
    import onnxruntime as ort

    from deploy_parity.inputs import make_feed
    from models import tv_keypoint_rcnn

    model = tv_keypoint_rcnn.build_detector().eval()
    adapter = TorchvisionDetection.for_model(model)
    case = tv_keypoint_rcnn.CASE
    images = make_feed(case, 150, 200, 1, seed=3)["images"]
    path = tmp_path / "kprcnn.onnx"
    torch.onnx.export(model, (torch.from_numpy(images),), str(path), dynamo=False, opset_version=17,
                      input_names=["images"], output_names=adapter.output_names,
                      dynamic_axes={"images": {2: "height", 3: "width"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = make_feed(case, 130, 180, 1, seed=5)["images"]  # another size than the export's
    flat = session.run(None, {"images": images})
    candidate = adapter.to_instances(adapter.named_outputs(flat), 0, (130, 180))
    with torch.inference_mode():
        eager = adapter.named_outputs(model(torch.from_numpy(images)))
    reference = adapter.to_instances({k: v.numpy() for k, v in eager.items()}, 0, (130, 180))
    assert len(reference) > 0, "the trained model should find someone in this scene"
    assert len(candidate) == len(reference)
    np.testing.assert_allclose(candidate.boxes, reference.boxes, atol=1e-2)
    np.testing.assert_allclose(candidate.keypoints[..., 2], reference.keypoints[..., 2], atol=1e-3)


def test_the_exporter_flattens_through_the_adapter():
    """_flat_outputs_module gives the exporter the adapter's names in order."""
    from models import tv_fcos

    module = _flat_outputs_module(tv_fcos.CASE, tv_fcos.build_reference())
    with torch.inference_mode():
        flat = module(torch.rand(1, 3, 96, 104))
    assert isinstance(flat, tuple) and len(flat) == 3
    boxes, scores, labels = flat
    assert boxes.shape[-1] == 4 and scores.dtype == torch.float32 and labels.dtype == torch.int64
