"""The Keypoint R-CNN and Mask R-CNN zoo cases (bug classes 4 and 5), on real models.

Fast tests: the heatmap decoders against torchvision, the deploy modules against the
references, the fixed-size graph's refusal, the trained models' COCO AP. Slow tests
(@slow): the parity suites in a subprocess, as a user runs them: the broken variants
fail with a shrunk counterexample, the correct models pass on real detections.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torchvision.models.detection.roi_heads import heatmaps_to_keypoints

from deploy_parity.backends import BACKENDS
from deploy_parity.contracts.bounds import onnx_graph_bounds
from deploy_parity.check import candidate_runner, check_parity
from deploy_parity.compare.case_outputs import compare_case_outputs
from deploy_parity.compare.tolerances import lookup
from deploy_parity.compare.verdict import Verdict
from models.rcnn_decoding import clamp_to_image, decode_heatmaps_eager, decode_heatmaps_exportable
from deploy_parity.errors import UnsupportedShapeError
from deploy_parity.export.onnx_exporter import export_onnx
from deploy_parity.inputs import make_feed
from deploy_parity.strategies import ParityExample
from models import keypoint_rcnn, mask_rcnn
from models.training.detectors import held_out_scenes
from tests.suite_runs import run_suite
from tools.train_rcnn import TASKS, evaluate

# Floors for the trained references on HELD_OUT_SCENES held-out scenes: about 60% of
# what the committed weights reach there (keypoint-rcnn: person box AP 0.42, keypoint
# AP 0.33; mask-rcnn: box AP 0.26, mask AP 0.13; 48-scene figures in
# models/weights/*.json), so they catch a broken or missing model, not noise. An
# untrained model scores ~0. COCO AP over IoU 0.5:0.95 (OKS for keypoints).
HELD_OUT_SCENES = 16
AP_FLOORS = {
    "keypoint-rcnn": {"bbox": 0.25, "keypoints": 0.15},
    "mask-rcnn": {"bbox": 0.15, "segm": 0.08},
}
# The tie threshold the keypoint comparator uses on CPU fp32.
PEAK_GAP = lookup("keypoints", "onnxrt-cpu", "fp32")["peak_gap"]


def random_heatmaps(num_rois: int, seed: int, image_height: int = 200, image_width: int = 180):
    """Heatmaps (R, 17, 56, 56) and ROIs (R, 4) inside the image, tiny and large, any aspect."""
    gen = torch.Generator().manual_seed(seed)
    maps = torch.randn(num_rois, 17, 56, 56, generator=gen) * 3
    x1 = torch.rand(num_rois, generator=gen) * image_width * 0.5
    y1 = torch.rand(num_rois, generator=gen) * image_height * 0.5
    widths = torch.rand(num_rois, generator=gen) * image_width * 0.5 + 0.3
    heights = torch.rand(num_rois, generator=gen) * image_height * 0.5 + 0.3
    rois = torch.stack([x1, y1, x1 + widths, y1 + heights], dim=1)
    return maps, rois


# ---------------------------------------------------------------- heatmap decoding


@pytest.mark.parametrize("seed", range(4))
def test_eager_decoder_is_torchvisions(seed):
    maps, rois = random_heatmaps(9, seed)
    rois[0, 2:] = rois[0, :2] + 0.4  # a sub-pixel ROI: a one-cell map
    expected_xy, expected_scores = heatmaps_to_keypoints(maps, rois)
    keypoints, gap = decode_heatmaps_eager(maps, rois)
    assert torch.equal(keypoints[..., :2], expected_xy[..., :2])
    assert torch.equal(keypoints[..., 2], expected_scores)
    assert (gap >= 0).all() and torch.isfinite(gap).all()


@pytest.mark.parametrize("seed", range(4))
def test_exportable_decoder_agrees_with_eager_up_to_ties(seed):
    maps, rois = random_heatmaps(9, seed)
    reference, gap = decode_heatmaps_eager(maps, rois)
    candidate, _ = decode_heatmaps_exportable(maps, rois)
    moved = (candidate[..., :2] - reference[..., :2]).abs().amax(dim=-1) > 0
    assert (gap[moved] < PEAK_GAP).all(), "a keypoint moved where the reference had no tie"
    assert (candidate[..., 2] - reference[..., 2]).abs().max() < 1e-3


def test_clip_is_a_no_op_and_the_transposed_clip_only_hurts_non_square_images():
    height, width = 120, 200
    maps, rois = random_heatmaps(6, seed=11, image_height=height, image_width=width)
    keypoints, _ = decode_heatmaps_exportable(maps, rois)
    assert torch.equal(clamp_to_image(keypoints, (height, width)), keypoints)
    transposed = clamp_to_image(keypoints, (width, height))  # the broken variant's order
    beyond = keypoints[..., 0] > height
    assert beyond.any()
    assert torch.equal(transposed[beyond][:, 0], torch.full_like(keypoints[beyond][:, 0], height))
    square, _ = decode_heatmaps_exportable(*random_heatmaps(6, seed=11, image_height=150, image_width=150))
    assert torch.equal(clamp_to_image(square, (150, 150)), square)


def test_argmax_tie_between_runtimes_is_ambiguous_not_a_failure():
    """Two near-equal plateaus far apart in one heatmap: a runtime's rounding moves the
    argmax to the other one. Through the case's own outputs and comparator that is
    AMBIGUOUS, because the reference's peak gap says it was a tie."""
    maps = torch.full((2, 17, 56, 56), -4.0)
    # 112 px = twice the heatmap: both plateaus are resampled at the same phases, so
    # their resized peaks differ only by what the plateaus themselves differ by.
    rois = torch.tensor([[10.0, 20.0, 122.0, 132.0], [30.0, 30.0, 60.0, 70.0]])
    maps[0, 5, 5:15, 5:15] = 6.0  # the reference's peak for keypoint 5 of ROI 0 ...
    maps[0, 5, 40:50, 40:50] = 6.0 - 1e-5  # ... and a second one, just below it
    rounded = maps.clone()
    rounded[0, 5, 40:50, 40:50] = 6.0 + 1e-5  # a runtime that rounds the other way
    keypoints, gap = decode_heatmaps_eager(maps, rois)
    moved, _ = decode_heatmaps_exportable(rounded, rois)
    assert (moved[0, 5, :2] - keypoints[0, 5, :2]).norm() > 10 and gap[0, 5] < PEAK_GAP

    def outputs(kps):
        return {"boxes": rois.numpy(), "scores": np.array([0.9, 0.8], np.float32), "labels": np.array([1, 1]),
                "keypoints": kps.numpy(), "keypoint_peak_gap": gap.numpy()}

    case = keypoint_rcnn.CASE
    comparisons = compare_case_outputs(case, outputs(keypoints), outputs(moved), backend="onnxrt-cpu",
                                       precision="fp32", image_size=(200, 180), batch=1)
    verdicts = {c.kind: c.verdict for c in comparisons}
    # The jump is a tie: left out of the systematic-shift check too.
    assert verdicts == {"boxes": Verdict.PASS, "keypoints": Verdict.AMBIGUOUS, "shift": Verdict.PASS}


class _Decoder(torch.nn.Module):
    def forward(self, maps, rois):
        return decode_heatmaps_exportable(maps, rois)


@pytest.mark.parametrize("num_rois", [0, 1, 7])
def test_exportable_decoder_runs_in_onnxruntime(tmp_path, num_rois):
    """Exported once with 3 ROIs, run with zero, one and many: no loop, no frozen count."""
    maps, rois = random_heatmaps(3, seed=5)
    path = tmp_path / "decoder.onnx"
    torch.onnx.export(_Decoder(), (maps, rois), str(path), dynamo=False, opset_version=17,
                      input_names=["maps", "rois"], output_names=["keypoints", "peak_gap"],
                      dynamic_axes={name: {0: "rois"} for name in ("maps", "rois", "keypoints", "peak_gap")})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    maps, rois = random_heatmaps(num_rois, seed=6)
    keypoints, gap = session.run(None, {"maps": maps.numpy(), "rois": rois.numpy()})
    reference, reference_gap = decode_heatmaps_eager(maps, rois)
    assert keypoints.shape == (num_rois, 17, 3) and gap.shape == (num_rois, 17)
    moved = np.abs(keypoints[..., :2] - reference[..., :2].numpy()).max(axis=-1) > 0
    assert (reference_gap.numpy()[moved] < PEAK_GAP).all()


# ---------------------------------------------------------------- model wrappers


def scene_image(case, height, width, seed):
    return torch.from_numpy(make_feed(case, height, width, 1, seed)["images"])


def test_keypoint_reference_is_torchvisions_inference():
    """Our orchestration + eager decoder == torchvision's KeypointRCNN forward, exactly."""
    reference = keypoint_rcnn.build_reference()
    image = scene_image(keypoint_rcnn.CASE, 150, 200, seed=3)
    with torch.inference_mode():
        boxes, scores, labels, keypoints, _ = reference(image)
        expected = reference.detector(list(image))[0]
    assert len(boxes) > 0, "the trained model should detect someone in this scene"
    assert torch.equal(boxes, expected["boxes"]) and torch.equal(scores, expected["scores"])
    assert torch.equal(labels, expected["labels"])
    assert torch.equal(keypoints[..., :2], expected["keypoints"][..., :2])
    assert torch.equal(keypoints[..., 2], expected["keypoints_scores"])


def test_mask_deploy_is_torchvisions_inference():
    """The spelled-out deploy module == torchvision's MaskRCNN forward, exactly (eager)."""
    reference = mask_rcnn.build_reference()
    deploy = mask_rcnn.CASE.build_deploy(None)
    image = scene_image(mask_rcnn.CASE, 131, 207, seed=4)
    with torch.inference_mode():
        expected, actual = reference(image), deploy(image)
    assert len(expected[0]) > 0
    for want, got in zip(expected, actual):
        assert torch.equal(want, got)


def test_mask_broken_deploy_is_right_only_at_the_export_size():
    reference = mask_rcnn.build_reference()
    broken = mask_rcnn.BROKEN.build_deploy(None)
    with torch.inference_mode():
        at_export = scene_image(mask_rcnn.CASE, *mask_rcnn.EXPORT_SIZE, seed=2)
        for want, got in zip(reference(at_export), broken(at_export)):
            assert torch.equal(want, got)
        other = scene_image(mask_rcnn.CASE, 200, 120, seed=2)
        want, got = reference(other)[0], broken(other)[0]
    assert len(want) > 0
    assert want.shape != got.shape or (want - got).abs().max() > 5.0


def test_feed_has_a_small_share_of_empty_scenes():
    case = keypoint_rcnn.CASE
    seeds = range(200)
    empty = [keypoint_rcnn.empty_scene(seed, 0) for seed in seeds]
    assert not empty[0] and not empty[1], "the square control and export-size examples must show people"
    assert 0.03 < np.mean(empty) < 0.15
    blank = next(seed for seed, is_empty in zip(seeds, empty) if is_empty)
    image = make_feed(case, 120, 100, 1, blank)["images"]
    busy = make_feed(case, 120, 100, 1, 0)["images"]
    assert image.std() < busy.std()  # nothing drawn on the background


# ---------------------------------------------------------------- fixed-size graph


def test_fixed_graph_declares_only_its_export_size(module_pool):
    """The exported graph has static H and W, and the bounds the suites draw from are
    read from it."""
    case = mask_rcnn.FIXED
    target = case.deploy_target(96, 128, case.default_dtypes())
    path = export_onnx(case, target, module_pool.context.export_options, module_pool.context.cache_dir)
    graph_bounds = onnx_graph_bounds(case, path)
    assert (graph_bounds.fixed_height, graph_bounds.fixed_width) == mask_rcnn.EXPORT_SIZE
    suite_bounds = module_pool.bounds(case, BACKENDS["onnxrt-cpu"])
    assert (suite_bounds.fixed_height, suite_bounds.fixed_width) == mask_rcnn.EXPORT_SIZE
    assert "not the only accepted size" in suite_bounds.why_not(96, 128, 1)


@pytest.mark.parametrize("backend_name", ["onnxrt-cpu", "torch-cpu"])
def test_fixed_graph_refuses_other_sizes(module_pool, backend_name):
    """A size other than the export size is refused before inference, naming the input
    and the accepted shape; the parity check reports REFUSED, not a failure or a pass."""
    case, backend = mask_rcnn.FIXED, BACKENDS[backend_name]
    example = ParityExample(96, 128, 1, case.default_dtypes(), seed=0)
    runner = candidate_runner(module_pool, case, backend, example)
    with pytest.raises(UnsupportedShapeError) as refusal:
        runner.infer(make_feed(case, 96, 128, 1, 0))
    height, width = mask_rcnn.EXPORT_SIZE
    assert refusal.value.input_name == "images"
    assert f"3, {height}, {width})" in refusal.value.expected  # the accepted shape
    assert "dimension 2 = 96" in str(refusal.value)

    result = check_parity(module_pool, case, backend, example)
    assert result.verdict == Verdict.REFUSED
    assert f"{height}, {width})" in result.message

    at_export = check_parity(module_pool, case, backend, ParityExample(height, width, 1, case.default_dtypes(), 0))
    assert at_export.verdict == Verdict.PASS, at_export.summary()


# ---------------------------------------------------------------- trained references


@pytest.mark.parametrize("name", ["keypoint-rcnn", "mask-rcnn"])
def test_trained_reference_detects(name):
    module = {"keypoint-rcnn": keypoint_rcnn, "mask-rcnn": mask_rcnn}[name]
    assert module.WEIGHTS.is_file(), f"train it: .venv/bin/python tools/train_rcnn.py {name}"
    metrics = evaluate(TASKS[name], module.build_reference(), held_out_scenes(HELD_OUT_SCENES))
    for iou_type, floor in AP_FLOORS[name].items():
        assert metrics[iou_type]["AP"] >= floor, f"{name} {iou_type} AP {metrics[iou_type]['AP']:.3f} < {floor}"


# ---------------------------------------------------------------- the suites, as a user runs them


def detections_per_parity_case(run) -> list:
    """Reference instance count of every parity case the suite checked."""
    counts = []
    for record in run.records():
        if record["check"] == "parity":
            boxes = [c for c in record["comparisons"] if c["kind"] == "boxes"]
            counts += [c["metrics"]["n_ref"] for c in boxes]
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("name", ["keypoint-rcnn", "mask-rcnn"])
def test_suite_passes_on_real_detections(tmp_path, name):
    run = run_suite(tmp_path, "--model", name)
    assert run.returncode == 0, run.output[-4000:]
    counts = detections_per_parity_case(run)
    assert counts, "no parity case was recorded"
    assert np.mean([c > 0 for c in counts]) >= 0.8, f"mostly vacuous: {counts}"
    assert any(c == 1 for c in counts) and any(c >= 2 for c in counts), f"need one and many detections: {counts}"
    assert any(c == 0 for c in counts), f"the zero-detection control never ran: {counts}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["keypoint-rcnn-broken", "mask-rcnn-broken"])
def test_suite_catches_the_broken_variant(tmp_path, name):
    run = run_suite(tmp_path, "--model", name)
    assert run.returncode == 1, run.output[-4000:]
    assert "Falsifying example" in run.output or "Failing test case" in run.output
    assert "re-run exactly this case" in run.output
