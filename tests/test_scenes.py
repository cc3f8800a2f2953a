"""Tests for the synthetic scene generator: determinism, ground-truth consistency,
sizes, and properties over the Hypothesis strategies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy_parity.scenes import (
    FLIP_INDEX,
    FLIP_PAIRS,
    KEYPOINT_NAMES,
    LABEL_BLOCK,
    LABEL_DISC,
    LABEL_PERSON,
    NUM_KEYPOINTS,
    POSES,
    SKELETON,
    ObjectSpec,
    PersonSpec,
    SceneSpec,
    person_keypoints,
    random_scene_spec,
    render_batch,
    render_scene,
)
from deploy_parity.scenes.strategies import scene_sizes, scene_specs

# Small budgets: these run on every test invocation and must stay within seconds.
QUICK = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_ground_truth_consistent(scene) -> None:
    """Every invariant a rendered scene's ground truth must satisfy."""
    h, w = scene.spec.height, scene.spec.width
    r = len(scene)
    assert scene.image.shape == (h, w, 3) and scene.image.dtype == np.uint8
    assert scene.boxes.shape == (r, 4) and scene.boxes.dtype == np.float32
    assert scene.labels.shape == (r,) and scene.labels.dtype == np.int64
    assert scene.keypoints.shape == (r, NUM_KEYPOINTS, 3) and scene.keypoints.dtype == np.float32
    assert scene.masks.shape == (r, h, w) and scene.masks.dtype == bool
    assert scene.areas.shape == (r,) and scene.spec_index.shape == (r,)
    assert set(scene.labels.tolist()) <= {LABEL_PERSON, LABEL_BLOCK, LABEL_DISC}

    # Visible masks never overlap: each pixel belongs to at most one instance.
    assert (scene.masks.sum(axis=0) <= 1).all()

    for box, mask, area, label, kps in zip(
        scene.boxes, scene.masks, scene.areas, scene.labels, scene.keypoints
    ):
        assert mask.any(), "instances with no visible pixel must be dropped"
        assert area == mask.sum()
        rows, cols = np.nonzero(mask)
        # Tight: the box encloses exactly the visible pixels' squares.
        assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        assert 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h
        if label == LABEL_PERSON:
            v = kps[:, 2]
            assert set(v.tolist()) <= {1.0, 2.0}
            seen = kps[v == 2]
            assert ((seen[:, 0] >= 0) & (seen[:, 0] < w) & (seen[:, 1] >= 0) & (seen[:, 1] < h)).all()
            # A visible keypoint's own pixel is its person's.
            assert mask[seen[:, 1].astype(int), seen[:, 0].astype(int)].all()
            # A hidden in-image keypoint's pixel is not.
            hidden = kps[v == 1]
            inside = (hidden[:, 0] >= 0) & (hidden[:, 0] < w) & (hidden[:, 1] >= 0) & (hidden[:, 1] < h)
            hidden = hidden[inside]
            assert not mask[hidden[:, 1].astype(int), hidden[:, 0].astype(int)].any()
        else:
            assert (kps == 0).all()


def one_person(scene_height=120, scene_width=120, **kwargs) -> PersonSpec:
    """A person centred in a scene of the given size, 80% of its short side tall."""
    defaults = dict(
        centre_x=scene_width / 2,
        centre_y=scene_height / 2,
        height=0.8 * min(scene_height, scene_width),
    )
    defaults.update(kwargs)
    return PersonSpec(**defaults)


# --------------------------------------------------------------------------- skeleton


def test_skeleton_is_coco():
    assert len(KEYPOINT_NAMES) == NUM_KEYPOINTS == 17
    assert KEYPOINT_NAMES[0] == "nose" and KEYPOINT_NAMES[-1] == "right_ankle"
    assert len(SKELETON) == 19
    assert all(0 <= a < 17 and 0 <= b < 17 and a != b for a, b in SKELETON)
    assert len(FLIP_PAIRS) == 8
    for left, right in FLIP_PAIRS:
        assert KEYPOINT_NAMES[left].replace("left_", "") == KEYPOINT_NAMES[right].replace("right_", "")
    assert [FLIP_INDEX[i] for i in FLIP_INDEX] == list(range(17))


def test_person_faces_the_camera():
    kp = person_keypoints(one_person())
    names = {n: kp[i] for i, n in enumerate(KEYPOINT_NAMES)}
    # The person's left appears on the image's right; head above shoulders above hips above ankles.
    for part in ("eye", "ear", "shoulder", "hip", "ankle"):
        assert names[f"left_{part}"][0] > names[f"right_{part}"][0]
    assert names["nose"][1] < names["left_shoulder"][1] < names["left_hip"][1] < names["left_ankle"][1]


# --------------------------------------------------------------------------- determinism


def test_same_spec_renders_identical_bytes():
    spec = random_scene_spec(96, 128, seed=7, min_people=2)
    a, b = render_scene(spec), render_scene(spec)
    for name in ("image", "boxes", "labels", "keypoints", "masks", "areas", "spec_index"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name


def test_different_seed_changes_the_image():
    spec = random_scene_spec(96, 128, seed=7, min_people=2)
    other = SceneSpec(**{**spec.__dict__, "seed": spec.seed + 1})
    assert render_scene(spec).image.tobytes() != render_scene(other).image.tobytes()
    assert random_scene_spec(96, 128, seed=8) != random_scene_spec(96, 128, seed=7)


# --------------------------------------------------------------------------- ground truth


def test_empty_scene_has_no_instances():
    scene = render_scene(SceneSpec(height=40, width=60, seed=3))
    assert len(scene) == 0
    assert scene.boxes.shape == (0, 4) and scene.keypoints.shape == (0, 17, 3)
    assert scene.masks.shape == (0, 40, 60)
    assert_ground_truth_consistent(scene)


def test_single_centred_person_is_fully_visible():
    scene = render_scene(SceneSpec(height=120, width=120, people=(one_person(),)))
    assert scene.labels.tolist() == [LABEL_PERSON]
    assert (scene.keypoints[0, :, 2] == 2).all()
    assert_ground_truth_consistent(scene)


@pytest.mark.parametrize("pose", sorted(POSES))
def test_every_named_pose_renders_with_all_keypoints_visible(pose):
    person = one_person(160, 160, pose=POSES[pose], height=100)
    scene = render_scene(SceneSpec(height=160, width=160, people=(person,)))
    assert (scene.keypoints[0, :, 2] == 2).all(), pose
    assert_ground_truth_consistent(scene)


def test_nearer_object_occludes_person_and_hides_keypoints():
    person = one_person()
    # A block whose bottom is lower than the feet stands nearer and covers the legs.
    block = ObjectSpec("block", centre_x=60, centre_y=100, size=40, aspect=1.5)
    scene = render_scene(SceneSpec(height=120, width=120, people=(person,), objects=(block,)))
    assert scene.labels.tolist() == [LABEL_PERSON, LABEL_BLOCK]
    v = dict(zip(KEYPOINT_NAMES, scene.keypoints[0, :, 2]))
    assert v["left_ankle"] == 1 and v["right_knee"] == 1 and v["nose"] == 2
    alone = render_scene(SceneSpec(height=120, width=120, people=(person,)))
    assert scene.areas[0] < alone.areas[0]
    assert scene.boxes[0, 3] < alone.boxes[0, 3]  # box shrinks to the visible part
    assert_ground_truth_consistent(scene)


def test_fully_hidden_and_fully_outside_instances_are_dropped():
    hidden = one_person(centre_y=50, height=30)
    cover = ObjectSpec("block", centre_x=60, centre_y=55, size=80)
    outside = one_person(centre_x=-500, centre_y=-500)
    disc = ObjectSpec("disc", centre_x=30, centre_y=110, size=12)
    scene = render_scene(
        SceneSpec(height=120, width=120, people=(hidden, outside), objects=(cover, disc))
    )
    assert sorted(scene.labels.tolist()) == [LABEL_BLOCK, LABEL_DISC]
    assert_ground_truth_consistent(scene)


def test_person_cut_by_the_border_marks_outside_keypoints():
    person = one_person(centre_x=60, centre_y=10)  # head above the top edge
    scene = render_scene(SceneSpec(height=120, width=120, people=(person,)))
    v = dict(zip(KEYPOINT_NAMES, scene.keypoints[0, :, 2]))
    assert v["nose"] == 1 and scene.keypoints[0, 0, 1] < 0
    assert scene.boxes[0, 1] == 0
    assert_ground_truth_consistent(scene)


def test_min_visible_pixels_drops_slivers():
    person = one_person(centre_x=-30, pose=POSES["t_pose"])  # only a hand pokes in
    spec = SceneSpec(height=120, width=120, people=(person,))
    assert len(render_scene(spec)) == 1
    assert len(render_scene(spec, min_visible_pixels=10_000)) == 0


def test_invalid_specs_are_refused():
    with pytest.raises(ValueError):
        ObjectSpec("triangle", 0, 0, 10)
    with pytest.raises(ValueError):
        PersonSpec(0, 0, height=-1)
    with pytest.raises(ValueError):
        PersonSpec(0, 0, height=10, colour=(0, 0, 300))
    with pytest.raises(ValueError):
        SceneSpec(height=10, width=10, background="space")


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("height,width", [(97, 203), (203, 97), (80, 320), (320, 80), (31, 17)])
def test_rectangular_and_odd_sizes(height, width):
    for seed in range(3):
        scene = render_scene(random_scene_spec(height, width, seed, min_people=1))
        assert scene.image.shape == (height, width, 3)
        assert_ground_truth_consistent(scene)


def test_random_scene_spec_respects_its_bounds():
    for seed in range(20):
        spec = random_scene_spec(100, 250, seed, min_people=1, max_people=2, max_objects=1)
        assert 1 <= len(spec.people) <= 2 and len(spec.objects) <= 1
        assert all(30 <= p.height <= 90 for p in spec.people)


def test_render_batch_stacks_images_and_targets():
    specs = [random_scene_spec(64, 96, seed) for seed in range(3)]
    images, targets = render_batch(specs)
    assert images.shape == (3, 3, 64, 96) and images.dtype == np.uint8
    assert (images[1] == render_scene(specs[1]).image.transpose(2, 0, 1)).all()
    assert set(targets[0]) >= {"boxes", "labels", "masks", "keypoints", "area", "iscrowd"}
    with pytest.raises(ValueError):
        render_batch([specs[0], random_scene_spec(65, 96, 0)])


# --------------------------------------------------------------------------- properties


@QUICK
@given(scene_specs(max_people=3, max_objects=2))
def test_property_ground_truth_is_consistent(spec):
    scene = render_scene(spec)
    assert_ground_truth_consistent(scene)
    assert len(scene) <= len(spec.people) + len(spec.objects)


@QUICK
@given(scene_specs(height=48, width=160, allow_empty=False))
def test_property_rectangular_scenes_without_empty(spec):
    assert len(spec.people) + len(spec.objects) >= 1
    assert_ground_truth_consistent(render_scene(spec))


@QUICK
@given(st.data())
def test_property_scene_sizes_respect_bounds(data):
    multiple = data.draw(st.sampled_from([1, 8, 32]))
    h, w = data.draw(scene_sizes(32, 320, multiple_of=multiple, max_aspect=4.0))
    assert 32 <= h <= 320 and 32 <= w <= 320
    assert h % multiple == 0 and w % multiple == 0
    assert max(h, w) / min(h, w) <= 4.0


def test_strategies_shrink_to_simple_scenes():
    from hypothesis import find

    # The minimal scene with a person: one, large, centred, upright, nothing else.
    spec = find(scene_specs(height=64, width=64), lambda s: len(s.people) >= 1,
                settings=settings(max_examples=200, database=None))
    assert len(spec.people) == 1 and not spec.objects
    person = spec.people[0]
    assert (person.centre_x, person.centre_y) == (32, 32)
    assert person.height == pytest.approx(0.9 * 64)
    assert person.pose == POSES["standing"]
    # The minimal scene overall is the empty control.
    empty = find(scene_specs(height=64, width=64), lambda s: True,
                 settings=settings(database=None))
    assert not empty.people and not empty.objects
    assert find(scene_sizes(32, 320), lambda s: True, settings=settings(database=None)) == (32, 32)
