"""The Ultralytics zoo cases (models/yolo_pose.py, models/yolo_seg.py).

First, in process (a few seconds): the committed weights (tools/train_yolo.py) make the
eager references find the scene renderer's people, with keypoints / masks, on scenes
they never saw, at the cases' own confidence threshold. Then through the suites in a
subprocess, as a user runs them: yolo-pose passes on ONNX Runtime (and yolo-seg's
parity); the fixed-size default export is caught by the coverage verdict; the deploy
wrapper reversing the channels of uint8 frames (BGR) is caught by parity with a shrunk
counterexample.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("ultralytics")

from deploy_parity.compare.boxes import box_iou  # noqa: E402
from models import yolo_pose, yolo_seg  # noqa: E402
from deploy_parity.scenes.feeds import scene_images  # noqa: E402
from deploy_parity.scenes.render import LABEL_PERSON  # noqa: E402
from tests.suite_runs import PARITY_ONLY, run_suite  # noqa: E402

# Held-out scenes: a key of their own, unlike training (SeedSequence([seed, 0, n, i]))
# and the training script's held-out set ([seed, 1, i]).
SIZES_HW = ((128, 160), (160, 128), (192, 192), (96, 224))
# The committed weights find ~92% (pose) of held-out people at conf 0.25 (yolo_*.json);
# a retrain with the same recipe clears these floors, an untrained model (every score
# 0.0123) finds none.
PEOPLE_FOUND_FLOOR = 0.7
FOUND_IOU = 0.5


def _reference_instances(case, count: int = 16):
    """(scenes, Instances) of the case's eager reference on held-out scenes."""
    import torch

    torch.set_num_threads(1)
    model = case.build_reference()
    results = []
    for i in range(count):
        height, width = SIZES_HW[i % len(SIZES_HW)]
        images, [scene] = scene_images(height, width, 1, seed=9000 + i, min_people=1, max_people=3)
        with torch.no_grad():
            named = case.named_outputs(model(torch.from_numpy(images).float() / 255.0))
        outputs = {name: value.numpy() for name, value in named.items()}
        results.append((scene, case.to_instances(outputs, 0, (height, width))))
    return results


def _people_found(results, person_label: int) -> float:
    found = total = 0
    for scene, inst in results:
        truth = scene.boxes[scene.labels == LABEL_PERSON]
        total += len(truth)
        mine = inst.boxes[(inst.labels == person_label) & (inst.scores > yolo_pose.CASE.score_threshold)]
        if len(truth) and len(mine):
            found += int((box_iou(truth, mine).max(axis=1) >= FOUND_IOU).sum())
    return found / total


def test_pose_reference_finds_people_with_keypoints():
    results = _reference_instances(yolo_pose.CASE)
    assert _people_found(results, person_label=0) >= PEOPLE_FOUND_FLOOR
    # Keypoints land on the person: the median visible keypoint lies inside its box.
    inside = []
    for _, inst in results:
        x, y = inst.keypoints[..., 0], inst.keypoints[..., 1]
        box = inst.boxes[:, None, :]
        inside.append(((x >= box[..., 0]) & (x <= box[..., 2]) & (y >= box[..., 1]) & (y <= box[..., 3])).ravel())
    assert np.mean(np.concatenate(inside)) > 0.8


def test_seg_reference_finds_instances_with_masks():
    results = _reference_instances(yolo_seg.CASE)
    assert _people_found(results, person_label=0) >= PEOPLE_FOUND_FLOOR
    # Most detections carry a mask above the threshold (the comparator thresholds at 0.5).
    has_mask = np.concatenate([(inst.masks >= 0.5).any(axis=(1, 2)) for _, inst in results])
    assert len(has_mask) and np.mean(has_mask) > 0.8


# ------------------------------------------------------------------ through the suites


def _outcome(output: str, test: str, model: str, backend: str = "onnxrt-cpu") -> str:
    match = re.search(rf"suites/test_parity\.py::{test}\[{re.escape(model)}@{backend}\] (PASSED|FAILED|SKIPPED|ERROR)",
                      output)
    return match.group(1) if match else "not run"


@pytest.mark.slow
def test_yolo_pose_passes_on_onnxruntime(tmp_path):
    run = run_suite(tmp_path, "-v", "--model", "yolo-pose", "--backend", "onnxrt-cpu")
    assert run.returncode == 0, run.output[-4000:]
    for test in ("test_artifact_covers_declared_inputs", "test_parity", "test_batch_consistency",
                 "test_refuses_shapes_outside_what_it_accepts", "test_determinism"):
        assert _outcome(run.output, test, "yolo-pose") == "PASSED", test
    parity = [r for r in run.records() if r["check"] == "parity"]
    assert len(parity) >= 25 and all(r["verdict"] in ("pass", "ambiguous") for r in parity)
    assert any(r["height"] != r["width"] for r in parity) and any(r["batch"] > 1 for r in parity)
    # Real people were compared: matched boxes and keypoints in most examples.
    judged = [c for r in parity for c in r["comparisons"] if c["kind"] == "keypoints" and c["verdict"] == "pass"]
    assert len(judged) >= len(parity)


@pytest.mark.slow
def test_fixed_size_default_export_fails_the_coverage_verdict(tmp_path, monkeypatch):
    """Ultralytics' default export (dynamic=False, batch 1) brought for a case of sides
    64-256 and batch up to 4. The .onnx is made at run time into PARITY_CACHE_DIR."""
    monkeypatch.setenv("PARITY_CACHE_DIR", str(tmp_path / "artifacts"))
    run = run_suite(tmp_path, "-v", "--model", "yolo-pose-fixed-export", "--backend", "onnxrt-cpu",
                    target="suites/test_parity.py::test_artifact_covers_declared_inputs")
    assert run.returncode == 1, run.output[-4000:]
    graph = re.escape(str(tmp_path / "artifacts" / "ultralytics" / "yolo_pose-ultralytics-export-1x3x160x160-"))
    expected = (r"yolo-pose-fixed-export on onnxrt-cpu: the artifact accepts less than the case declares: input "
                rf"'images' is fixed at 1x3x160x160 \(graph {graph}[0-9a-f]{{16}}\.onnx\) but the case declares sides "
                r"64-256 in steps of 32 and batch up to 4; export with dynamic axes, or declare the case fixed-size / "
                r"max_batch=1 if that is intended")
    assert re.search(expected, run.output), run.output[-4000:]
    assert _outcome(run.output, "test_artifact_covers_declared_inputs", "yolo-pose-fixed-export") == "FAILED"
    [record] = [r for r in run.records() if r["check"] == "coverage"]
    assert record["verdict"] == "fail" and re.fullmatch(expected, record["message"])
    assert "onnxslim" not in run.output  # Ultralytics' export warnings stay out of the suite's output


@pytest.mark.slow
def test_bgr_uint8_path_fails_parity_with_a_shrunk_example(tmp_path):
    """The deploy wrapper reverses the channels of uint8 frames (written for OpenCV's
    BGR): float32 examples pass, the square and export-size examples among them, and
    parity shrinks the failure to the smallest uint8 image."""
    run = run_suite(tmp_path, "-v", "--model", "yolo-seg-bgr", "--backend", "onnxrt-cpu", target=PARITY_ONLY)
    assert run.returncode == 1, run.output[-4000:]
    assert _outcome(run.output, "test_parity", "yolo-seg-bgr") == "FAILED"
    assert "Failing explicit example" not in run.output  # found by the search, then shrunk
    replay = re.search(r"re-run exactly this case: pytest "
                       r"'suites/test_parity\.py::test_parity\[yolo-seg-bgr@onnxrt-cpu\]' --model yolo-seg-bgr "
                       r"--backend onnxrt-cpu --replay h=(\d+),w=(\d+),batch=(\d+),dtypes=(\w+),seed=(\d+)\n",
                       run.output)
    assert replay, run.output[-4000:]
    assert replay.groups() == ("64", "64", "1", "uint8", "0")  # the smallest example there is
    records = [r for r in run.records() if r["check"] == "parity"]
    assert all(r["verdict"] == "pass" for r in records if r["dtypes"] == ["float32"])
    failing = [r for r in records if r["verdict"] == "fail"]
    assert failing and all(r["dtypes"] == ["uint8"] for r in failing)
    kinds = {c["kind"] for r in failing for c in r["comparisons"] if c["verdict"] == "fail"}
    assert kinds >= {"boxes", "masks"}


@pytest.mark.slow
def test_yolo_seg_passes_parity_on_onnxruntime(tmp_path):
    run = run_suite(tmp_path, "-v", "--model", "yolo-seg", "--backend", "onnxrt-cpu", target=PARITY_ONLY)
    assert run.returncode == 0, run.output[-4000:]
    parity = [r for r in run.records() if r["check"] == "parity"]
    masks = [c for r in parity for c in r["comparisons"] if c["kind"] == "masks" and c["verdict"] == "pass"]
    assert len(masks) >= len(parity)  # masks were compared, not vacuous
