"""Synthetic scenes (stick-figure people, blocks, discs) with exact ground truth.

Used to train the zoo models briefly and to feed the parity suites inputs on which
the reference produces real boxes, keypoints and masks. Part of the public API:
deploy_parity.scene_feed(inputs) (feeds.py) is a ModelCase.make_feed for a user's
detector, so that its cases compare detections rather than nothing.
"""

from deploy_parity.scenes.render import (
    BACKGROUND_KINDS,
    CLASS_NAMES,
    LABEL_BACKGROUND,
    LABEL_BLOCK,
    LABEL_DISC,
    LABEL_PERSON,
    OBJECT_KINDS,
    POSES,
    ObjectSpec,
    PersonSpec,
    PoseAngles,
    Scene,
    SceneSpec,
    distinct_colours,
    person_keypoints,
    random_pose,
    random_scene_spec,
    render_batch,
    render_scene,
)
from deploy_parity.scenes.skeleton import (
    FLIP_INDEX,
    FLIP_PAIRS,
    KEYPOINT_INDEX,
    KEYPOINT_NAMES,
    NUM_KEYPOINTS,
    SKELETON,
)

__all__ = [
    "BACKGROUND_KINDS",
    "CLASS_NAMES",
    "FLIP_INDEX",
    "FLIP_PAIRS",
    "KEYPOINT_INDEX",
    "KEYPOINT_NAMES",
    "LABEL_BACKGROUND",
    "LABEL_BLOCK",
    "LABEL_DISC",
    "LABEL_PERSON",
    "NUM_KEYPOINTS",
    "OBJECT_KINDS",
    "POSES",
    "ObjectSpec",
    "PersonSpec",
    "PoseAngles",
    "SKELETON",
    "Scene",
    "SceneSpec",
    "distinct_colours",
    "person_keypoints",
    "random_pose",
    "random_scene_spec",
    "render_batch",
    "render_scene",
]
