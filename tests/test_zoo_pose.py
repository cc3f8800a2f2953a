"""The trained pose-rtmo reference finds real people on synthetic scenes.

Parity between a reference and its export proves little when the reference detects
nothing (random weights on noise). These tests pin down that the committed weights
(models/weights/pose_rtmo.pt, trained by tools/train_pose_rtmo.py) make the eager
reference report confident people with keypoints near the ground truth, on scenes
it was never trained on, and that the case's own feed shows it people to compare.
A few seconds on one CPU thread.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploy_parity.compare.boxes import box_iou
from deploy_parity.inputs import make_feed
from deploy_parity.scenes.render import LABEL_PERSON, random_scene_spec, render_scene
from models.training.coco_eval import coco_ap
from models import pose_rtmo

# Held-out scenes: a SeedSequence key of their own, distinct from the training
# stream (SeedSequence([seed, 0, step, i])) and from the script's held-out set.
TEST_SEED_KEY = (7, 2024)
SIZES_HW = ((96, 160), (160, 96), (128, 128), (128, 192))
# Floors sit well below what the committed weights reach, so a retrain with the same
# recipe passes while an untrained or broken reference (AP ~0) cannot. The weights reach
# box AP 0.52 / keypoint AP 0.135 (AP50 0.53) on the training script's 140 held-out
# scenes (pose_rtmo.json), and box AP 0.59 / keypoint AP 0.14 (AP50 0.60) on the 40
# here. Keypoint AP is low in absolute terms because COCO's OKS is scaled by the
# visible mask area, tiny for stick figures: a 65 px tall person has ~800 px^2, so a
# 2 px error on the nose already costs most of its similarity. Wrists are the weak
# spot (~12 px median error); head, shoulders and hips are ~2 px.
BOX_AP_FLOOR = 0.4
KEYPOINT_AP_FLOOR = 0.08
KEYPOINT_AP50_FLOOR = 0.35
# A person "found": a detection above the case's score threshold overlapping it this much.
FOUND_IOU = 0.5
# Keypoints "near" the ground truth: median visible-keypoint error under this fraction
# of the person's box height (the weights reach ~0.036, about 2 px on a 65 px person).
KEYPOINT_ERROR_OF_HEIGHT = 0.08
NMS_IOU = 0.5


@pytest.fixture(scope="module")
def reference():
    if not pose_rtmo.WEIGHTS.is_file():
        pytest.fail(f"{pose_rtmo.WEIGHTS} is missing: run tools/train_pose_rtmo.py to train the reference")
    torch.set_num_threads(1)
    return pose_rtmo.build_reference()


def held_out_scenes(count: int, min_people: int = 1):
    scenes = []
    for i in range(count):
        height, width = SIZES_HW[i % len(SIZES_HW)]
        seed = int(np.random.SeedSequence([*TEST_SEED_KEY, min_people, i]).generate_state(1)[0])
        scenes.append(render_scene(random_scene_spec(height, width, seed, min_people=min_people, max_people=3)))
    return scenes


@torch.no_grad()
def detect(model, scene) -> dict:
    """The reference's top-k on one scene, thinned by NMS (the model keeps several
    priors per person; parity does not care, counting people does)."""
    from torchvision.ops import nms

    dets, keypoints = model(torch.from_numpy(scene.image.transpose(2, 0, 1)[None].copy()))
    keep = nms(dets[0, :, :4], dets[0, :, 4], NMS_IOU)
    return {
        "boxes": dets[0, keep, :4].numpy(),
        "scores": dets[0, keep, 4].numpy(),
        "labels": np.full(len(keep), LABEL_PERSON),
        "keypoints": keypoints[0, keep].numpy(),
    }


def test_the_case_declares_a_score_threshold_and_scene_feed():
    assert pose_rtmo.CASE.score_threshold is not None
    for case in pose_rtmo.CASES:
        assert case.make_feed is pose_rtmo.CASE.make_feed, f"{case.name} must share the scene feed"


def test_finds_people_with_keypoints_near_ground_truth(reference):
    threshold = pose_rtmo.CASE.score_threshold
    found, missed, keypoint_errors = 0, [], []
    for index, scene in enumerate(held_out_scenes(16)):
        pred = detect(reference, scene)
        confident = pred["scores"] > threshold
        for r in np.flatnonzero(scene.labels == LABEL_PERSON):
            iou = box_iou(scene.boxes[r : r + 1], pred["boxes"][confident])[0]
            if not iou.size or iou.max() < FOUND_IOU:
                missed.append(f"scene {index} person {r} box {scene.boxes[r].round(1).tolist()}")
                continue
            found += 1
            best = np.flatnonzero(confident)[int(iou.argmax())]
            visible = scene.keypoints[r, :, 2] == 2
            error = np.hypot(*(pred["keypoints"][best, visible, :2] - scene.keypoints[r, visible, :2]).T)
            height = scene.boxes[r, 3] - scene.boxes[r, 1]
            keypoint_errors.append(np.median(error) / height)
    # Occluded or border-cut people may be missed; most must not be.
    assert found >= 0.85 * (found + len(missed)), f"found {found}, missed {len(missed)}: {missed}"
    assert np.median(keypoint_errors) < KEYPOINT_ERROR_OF_HEIGHT, (
        f"median keypoint error {np.median(keypoint_errors):.3f} of the box height")


def test_coco_ap_on_held_out_scenes(reference):
    scenes = held_out_scenes(40)
    predictions = [detect(reference, scene) for scene in scenes]
    box = coco_ap(scenes, predictions, "bbox", category_ids=[LABEL_PERSON])
    keypoints = coco_ap(scenes, predictions, "keypoints")
    assert box["AP"] >= BOX_AP_FLOOR, box
    assert keypoints["AP"] >= KEYPOINT_AP_FLOOR, keypoints
    assert keypoints["AP50"] >= KEYPOINT_AP50_FLOOR, keypoints


def test_scenes_without_people_give_few_confident_detections(reference):
    scenes = held_out_scenes(24, min_people=0)
    empty = [s for s in scenes if not (s.labels == LABEL_PERSON).any()]
    assert empty, "the held-out draw should include scenes with no person"
    false_alarms = sum(int((detect(reference, s)["scores"] > pose_rtmo.CASE.score_threshold).sum()) for s in empty)
    assert false_alarms <= len(empty) // 2, f"{false_alarms} confident detections on {len(empty)} scenes without people"


@pytest.mark.parametrize("height, width, dtype", [(96, 160, "uint8"), (192, 64, "float32"), (64, 64, "float32")])
def test_the_case_feed_shows_confident_people(reference, height, width, dtype):
    """The parity suites compare on this feed: each image must hold people the reference
    is sure of, or a parity pass says nothing about where the keypoints go."""
    feed = make_feed(pose_rtmo.CASE, height, width, batch=3, seed=5, dtypes=(dtype,))
    with torch.no_grad():
        dets, _ = reference(torch.from_numpy(feed["images"]))
    top_scores = dets[..., 4].max(dim=1).values
    assert (top_scores > pose_rtmo.CASE.score_threshold).all(), top_scores
