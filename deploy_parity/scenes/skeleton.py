"""The COCO person skeleton: keypoint names, limbs and left/right flip pairs.

Indices are 0-based and follow COCO's keypoint order, so keypoint arrays produced by
the scene generator line up with what COCO-trained heads (Keypoint R-CNN, RTMO) emit.
"Left" is the person's left: for someone facing the camera it appears on the image's
right.
"""

from __future__ import annotations

from deploy_parity.compare.keypoints import COCO_KEYPOINT_NAMES

# One list of names for the whole project: the library's COCO list.
KEYPOINT_NAMES: tuple[str, ...] = COCO_KEYPOINT_NAMES
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
KEYPOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(KEYPOINT_NAMES)}

# COCO's 19 skeleton edges (the dataset lists them 1-based; these are 0-based).
SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12),
    (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9), (8, 10),
    (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip

# (left, right) index pairs swapped by a horizontal flip.
FLIP_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (KEYPOINT_INDEX[name], KEYPOINT_INDEX["right_" + name[len("left_"):]])
    for name in KEYPOINT_NAMES
    if name.startswith("left_")
)


def _flip_permutation() -> tuple[int, ...]:
    perm = list(range(NUM_KEYPOINTS))
    for left, right in FLIP_PAIRS:
        perm[left], perm[right] = right, left
    return tuple(perm)


# keypoints_after_flip = keypoints[FLIP_INDEX] (then mirror x).
FLIP_INDEX: tuple[int, ...] = _flip_permutation()
