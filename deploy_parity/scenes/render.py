"""Synthetic scenes with exact ground truth: stick-figure people, blocks and discs.

A detection or pose model with random weights, fed noise, detects nothing, so parity
on it proves little. The zoo models are trained briefly on these scenes and the
parity suites feed them, so the reference produces real boxes, keypoints and masks.

Conventions
-----------
* Continuous pixel coordinates: pixel (row i, col j) covers [j, j+1) x [i, i+1) and
  a shape covers a pixel when it contains the pixel's centre (j+0.5, i+0.5). Shapes
  are rasterised here, in numpy, with that one rule, so masks, boxes and keypoint
  visibility all agree exactly.
* Boxes are x1 y1 x2 y2 enclosing the visible pixels' squares: x2 = last column + 1.
* Labels follow torchvision detection: 0 background, 1 person, 2 block, 3 disc.
* Painter's order: an instance whose lowest point is lower in the image stands
  nearer the camera and is drawn later, hiding what it overlaps. Masks are the
  visible pixels only; instances left with no visible pixel are dropped.
* People face the camera, so a person's left side appears on the image's right.
* Keypoint visibility v: 2 when the keypoint's pixel belongs to its person's visible
  mask; 1 when it is hidden by another instance or lies outside the image (x, y are
  then still the true position); 0 is never produced for people. Objects get zeros.
* Everything is a pure function of the `SceneSpec`: the same spec gives the same bytes.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np

from deploy_parity.scenes.skeleton import KEYPOINT_INDEX, NUM_KEYPOINTS

LABEL_BACKGROUND = 0
LABEL_PERSON = 1
LABEL_BLOCK = 2
LABEL_DISC = 3
CLASS_NAMES: tuple[str, ...] = ("background", "person", "block", "disc")
OBJECT_KINDS: tuple[str, ...] = ("block", "disc")
BACKGROUND_KINDS: tuple[str, ...] = ("plain", "smooth", "cluttered")

_OBJECT_LABELS = {"block": LABEL_BLOCK, "disc": LABEL_DISC}


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class PoseAngles:
    """Joint angles in degrees for a person facing the camera.

    lean / head_tilt: torso and head rotation from upright, positive = top towards
    the image's right. *_arm / *_leg: upper arm and thigh angle from hanging straight
    down, positive = swung outwards, away from the body (180 = arm straight up).
    *_elbow / *_knee: forearm and shin angle relative to the upper arm and thigh,
    positive = bending further outwards.
    """

    lean: float = 0.0
    head_tilt: float = 0.0
    left_arm: float = 12.0
    left_elbow: float = 5.0
    right_arm: float = 12.0
    right_elbow: float = 5.0
    left_leg: float = 5.0
    left_knee: float = 0.0
    right_leg: float = 5.0
    right_knee: float = 0.0

    def mirrored(self) -> "PoseAngles":
        """The same pose seen in a mirror: left and right swapped, lean negated."""
        return PoseAngles(
            lean=-self.lean,
            head_tilt=-self.head_tilt,
            left_arm=self.right_arm,
            left_elbow=self.right_elbow,
            right_arm=self.left_arm,
            right_elbow=self.left_elbow,
            left_leg=self.right_leg,
            left_knee=self.right_knee,
            right_leg=self.left_leg,
            right_knee=self.left_knee,
        )


# Named poses that random specs and strategies start from (then jitter).
POSES: dict[str, PoseAngles] = {
    "standing": PoseAngles(),
    "arms_raised": PoseAngles(left_arm=160, left_elbow=10, right_arm=160, right_elbow=10,
                              left_leg=8, right_leg=8),
    "t_pose": PoseAngles(left_arm=90, left_elbow=0, right_arm=90, right_elbow=0,
                         left_leg=6, right_leg=6),
    "walking": PoseAngles(lean=3, left_arm=22, left_elbow=25, right_arm=6, right_elbow=35,
                          left_leg=16, left_knee=-20, right_leg=-3, right_knee=8),
    "waving": PoseAngles(head_tilt=8, left_arm=100, left_elbow=55, right_arm=10,
                         right_elbow=5, left_leg=6, right_leg=6),
    "hands_on_hips": PoseAngles(left_arm=38, left_elbow=-120, right_arm=38,
                                right_elbow=-120, left_leg=10, right_leg=10),
    "star": PoseAngles(left_arm=130, left_elbow=5, right_arm=130, right_elbow=5,
                       left_leg=25, right_leg=25),
    "squatting": PoseAngles(left_arm=55, left_elbow=-30, right_arm=55, right_elbow=-30,
                            left_leg=65, left_knee=-95, right_leg=65, right_knee=-95),
    "leaning": PoseAngles(lean=18, head_tilt=-10, left_arm=25, left_elbow=10, right_arm=8,
                          right_elbow=5, left_leg=4, right_leg=10),
    "kicking": PoseAngles(lean=-8, left_arm=70, left_elbow=10, right_arm=45, right_elbow=10,
                          left_leg=70, left_knee=-10, right_leg=2, right_knee=0),
}  # fmt: skip


def _check_colour(colour) -> tuple[int, int, int]:
    rgb = tuple(int(c) for c in colour)
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ValueError(f"colour must be three ints in 0..255, got {colour!r}")
    return rgb


def _check_finite(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"{owner}.{name} must be finite, got {value!r}")


@dataclass(frozen=True)
class PersonSpec:
    """One stick-figure person.

    (centre_x, centre_y) is the middle of the upright figure, halfway between the
    top of the head and the feet; height is that head-to-feet span in pixels.
    thickness scales the drawn widths of limbs and torso (1.0 = average build).
    """

    centre_x: float
    centre_y: float
    height: float
    pose: PoseAngles = field(default_factory=PoseAngles)
    colour: tuple[int, int, int] = (200, 40, 40)
    thickness: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "colour", _check_colour(self.colour))
        _check_finite("PersonSpec", centre_x=self.centre_x, centre_y=self.centre_y)
        if not (self.height > 0 and math.isfinite(self.height)):
            raise ValueError(f"PersonSpec.height must be > 0, got {self.height!r}")
        if not (self.thickness > 0 and math.isfinite(self.thickness)):
            raise ValueError(f"PersonSpec.thickness must be > 0, got {self.thickness!r}")


@dataclass(frozen=True)
class ObjectSpec:
    """A distractor object: a "block" (rectangle) or a "disc" (ellipse).

    size is the shape's height in pixels before rotation; its width is size * aspect.
    angle rotates it clockwise on screen, in degrees.
    """

    kind: str
    centre_x: float
    centre_y: float
    size: float
    colour: tuple[int, int, int] = (40, 90, 200)
    aspect: float = 1.0
    angle: float = 0.0

    def __post_init__(self):
        if self.kind not in OBJECT_KINDS:
            raise ValueError(f"ObjectSpec.kind must be one of {OBJECT_KINDS}, got {self.kind!r}")
        object.__setattr__(self, "colour", _check_colour(self.colour))
        _check_finite("ObjectSpec", centre_x=self.centre_x, centre_y=self.centre_y,
                      angle=self.angle)
        for name in ("size", "aspect"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"ObjectSpec.{name} must be > 0, got {value!r}")

    @property
    def label(self) -> int:
        return _OBJECT_LABELS[self.kind]


@dataclass(frozen=True)
class SceneSpec:
    """Everything a scene is rendered from. `seed` drives the background texture,
    the clutter lines and the pixel noise; the instances are fully described here."""

    height: int
    width: int
    seed: int = 0
    people: tuple[PersonSpec, ...] = ()
    objects: tuple[ObjectSpec, ...] = ()
    background: str = "cluttered"

    def __post_init__(self):
        if int(self.height) < 1 or int(self.width) < 1:
            raise ValueError(f"SceneSpec size must be >= 1x1, got {self.height}x{self.width}")
        if int(self.seed) < 0:
            raise ValueError(f"SceneSpec.seed must be >= 0, got {self.seed}")
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "seed", int(self.seed))
        if self.background not in BACKGROUND_KINDS:
            raise ValueError(
                f"SceneSpec.background must be one of {BACKGROUND_KINDS}, got {self.background!r}"
            )
        object.__setattr__(self, "people", tuple(self.people))
        object.__setattr__(self, "objects", tuple(self.objects))


# --------------------------------------------------------------------------- result


@dataclass(frozen=True, eq=False)
class Scene:
    """A rendered scene and its ground truth, R visible instances in draw order.

    image (H, W, 3) uint8; boxes (R, 4) float32 xyxy; labels (R,) int64;
    keypoints (R, 17, 3) float32 x y v; masks (R, H, W) bool, visible pixels;
    areas (R,) float32 visible pixel counts; spec_index (R,) int64, the instance's
    position in spec.people (label 1) or spec.objects (labels 2, 3).
    """

    spec: SceneSpec
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    keypoints: np.ndarray
    masks: np.ndarray
    areas: np.ndarray
    spec_index: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def target(self) -> dict[str, np.ndarray]:
        """Ground truth as a torchvision-style detection target (numpy arrays)."""
        return {
            "boxes": self.boxes,
            "labels": self.labels,
            "masks": self.masks,
            "keypoints": self.keypoints,
            "area": self.areas,
            "iscrowd": np.zeros(len(self), dtype=np.int64),
        }


# --------------------------------------------------------------------------- raster


class _Canvas:
    """An RGB image plus an owner map (0 = background, k = k-th drawn instance).

    Shapes are rasterised into small windows around themselves, so the cost of a
    shape is its own area, not the image's.
    """

    def __init__(self, rgb: np.ndarray):
        self.rgb = rgb
        self.height, self.width = rgb.shape[:2]
        self.owner = np.zeros((self.height, self.width), dtype=np.uint16)
        self._col_centres = np.arange(self.width, dtype=np.float32) + 0.5
        self._row_centres = np.arange(self.height, dtype=np.float32) + 0.5

    def _window(self, x0, y0, x1, y1):
        """Pixels whose centres may lie in [x0, x1] x [y0, y1], clipped to the image."""
        c0 = max(math.ceil(x0 - 0.5), 0)
        c1 = min(math.floor(x1 - 0.5), self.width - 1) + 1
        r0 = max(math.ceil(y0 - 0.5), 0)
        r1 = min(math.floor(y1 - 0.5), self.height - 1) + 1
        if c0 >= c1 or r0 >= r1:
            return None
        xs = self._col_centres[c0:c1][None, :]
        ys = self._row_centres[r0:r1][:, None]
        return (slice(r0, r1), slice(c0, c1)), xs, ys

    def capsule(self, p, q, radius):
        """A thick segment with round ends (a limb); a disc when p == q."""
        (px, py), (qx, qy) = p, q
        win = self._window(min(px, qx) - radius, min(py, qy) - radius,
                           max(px, qx) + radius, max(py, qy) + radius)
        if win is None:
            return None
        index, xs, ys = win
        dx, dy = qx - px, qy - py
        length2 = dx * dx + dy * dy
        rx, ry = xs - px, ys - py
        if length2 > 0:
            t = np.clip((rx * dx + ry * dy) / length2, 0.0, 1.0)
            rx, ry = rx - t * dx, ry - t * dy
        return index, rx * rx + ry * ry <= radius * radius

    def disc(self, centre, radius):
        return self.capsule(centre, centre, radius)

    def ellipse(self, centre, half_width, half_height, angle_deg):
        cx, cy = centre
        reach = max(half_width, half_height)
        win = self._window(cx - reach, cy - reach, cx + reach, cy + reach)
        if win is None:
            return None
        index, xs, ys = win
        c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
        # Rotate pixel offsets into the ellipse's own frame.
        u = (xs - cx) * c + (ys - cy) * s
        v = -(xs - cx) * s + (ys - cy) * c
        return index, (u / half_width) ** 2 + (v / half_height) ** 2 <= 1.0

    def convex_polygon(self, points):
        pts = np.asarray(points, dtype=np.float64)
        win = self._window(*pts.min(axis=0), *pts.max(axis=0))
        if win is None:
            return None
        index, xs, ys = win
        ax, ay = pts[:, 0], pts[:, 1]
        bx, by = np.roll(ax, -1), np.roll(ay, -1)
        # Orientation-free inside test: same side of every edge as the polygon's area.
        signed_area = float(np.sum(ax * by - bx * ay))
        sign = 1.0 if signed_area >= 0 else -1.0
        inside = np.ones(np.broadcast(xs, ys).shape, dtype=bool)
        for i in range(len(pts)):
            cross = (bx[i] - ax[i]) * (ys - ay[i]) - (by[i] - ay[i]) * (xs - ax[i])
            inside &= sign * cross >= 0
        return index, inside

    def fill(self, region, colour, owner: Optional[int]) -> None:
        """Paint a rasterised region; owner None leaves the owner map alone (clutter)."""
        if region is None:
            return
        index, mask = region
        self.rgb[index][mask] = colour
        if owner is not None:
            self.owner[index][mask] = owner


# --------------------------------------------------------------------------- background


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: float) -> np.ndarray:
    """(H, W, 3) values in [0, 1] varying smoothly over about `cells` blobs per short side."""
    short = min(height, width)
    grid_h = max(2, round(cells * height / short) + 1)
    grid_w = max(2, round(cells * width / short) + 1)
    grid = rng.random((grid_h, grid_w, 3), dtype=np.float32)
    rows = _interpolation_matrix(height, grid_h)
    cols = _interpolation_matrix(width, grid_w)
    return np.einsum("hg,gwc->hwc", rows, np.einsum("gvc,wv->gwc", grid, cols))


def _interpolation_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights of a smoothstep interpolation from n_in samples."""
    pos = (np.arange(n_out, dtype=np.float32) + 0.5) / n_out * (n_in - 1)
    lo = np.minimum(pos.astype(np.int64), n_in - 2)
    frac = pos - lo
    frac = frac * frac * (3 - 2 * frac)  # smoothstep: no visible grid creases
    weights = np.zeros((n_out, n_in), dtype=np.float32)
    weights[np.arange(n_out), lo] = 1 - frac
    weights[np.arange(n_out), lo + 1] = frac
    return weights


def _paint_background(
    kind: str, height: int, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 background and its base colour (clutter is tinted from it)."""
    # Muted, low-saturation colours so the saturated people and objects stand out,
    # while the texture keeps a model from solving the task by colour thresholding.
    base = rng.uniform(80, 170) + rng.uniform(-20, 20, size=3)
    image = np.empty((height, width, 3), dtype=np.float32)
    image[:] = base.astype(np.float32)
    if kind != "plain":
        image += 70 * (_smooth_noise(rng, height, width, rng.uniform(2, 5)) - 0.5)
        image += 30 * (_smooth_noise(rng, height, width, rng.uniform(10, 18)) - 0.5)
    return np.clip(image, 0, 255).astype(np.uint8), base


def _draw_clutter_lines(canvas: _Canvas, base: np.ndarray, rng: np.random.Generator) -> None:
    """Thin straight lines that belong to no instance: edges a model must learn to ignore."""
    short = min(canvas.height, canvas.width)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = rng.uniform(0, canvas.width), rng.uniform(0, canvas.height)
        length = rng.uniform(0.15, 0.6) * short
        theta = rng.uniform(0, math.pi)
        x1, y1 = x0 + length * math.cos(theta), y0 + length * math.sin(theta)
        colour = np.clip(base + rng.uniform(-70, 70) + rng.uniform(-15, 15, size=3), 0, 255)
        radius = rng.uniform(0.6, 1.4)
        canvas.fill(canvas.capsule((x0, y0), (x1, y1), radius), colour.astype(np.uint8), None)


# --------------------------------------------------------------------------- people

# Body proportions as fractions of the person's height (head top to feet).
_HEAD_RADIUS = 0.075
_NECK = 0.05
_TORSO = 0.32  # pelvis to shoulder line
_PELVIS_BELOW_CENTRE = 0.02
_SHOULDER_HALF_WIDTH = 0.115
_HIP_HALF_WIDTH = 0.075
_UPPER_ARM, _FOREARM = 0.16, 0.15
_THIGH, _SHIN = 0.23, 0.22
_ARM_RADIUS, _LEG_RADIUS, _NECK_RADIUS = 0.026, 0.036, 0.03
# No limb thinner than this, so the pixel holding a limb-end keypoint is always drawn.
_MIN_RADIUS_PX = 1.0
_EYE_DARK = np.array([25, 25, 30], dtype=np.uint8)
_SKIN = np.array([232, 196, 165], dtype=np.float64)


def _rotate(vec: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate clockwise on screen (image y points down)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([vec[0] * c - vec[1] * s, vec[0] * s + vec[1] * c])


@dataclass(frozen=True)
class _Body:
    keypoints: np.ndarray  # (17, 2)
    pelvis: np.ndarray
    shoulder_mid: np.ndarray
    head_centre: np.ndarray
    head_radius: float
    head_up: np.ndarray  # unit vector from chin to crown
    to_left: np.ndarray  # unit vector across the torso towards the person's left


def _body(person: PersonSpec) -> _Body:
    h, pose = person.height, person.pose
    up = _rotate(np.array([0.0, -1.0]), pose.lean)
    down = -up
    to_left = _rotate(up, 90.0)  # person's left = image right when upright
    pelvis = np.array([person.centre_x, person.centre_y + _PELVIS_BELOW_CENTRE * h])
    shoulder_mid = pelvis + up * _TORSO * h

    kp = np.zeros((NUM_KEYPOINTS, 2))
    k = KEYPOINT_INDEX
    for side, sign in (("left", 1.0), ("right", -1.0)):
        shoulder = shoulder_mid + sign * to_left * _SHOULDER_HALF_WIDTH * h
        hip = pelvis + sign * to_left * _HIP_HALF_WIDTH * h
        # "Outwards" is towards the person's own side: a clockwise turn of `down`
        # moves it to the image left, so the left side turns anticlockwise.
        arm_angle = getattr(pose, f"{side}_arm")
        upper = _rotate(down, -sign * arm_angle)
        elbow = shoulder + upper * _UPPER_ARM * h
        fore = _rotate(upper, -sign * getattr(pose, f"{side}_elbow"))
        wrist = elbow + fore * _FOREARM * h
        thigh = _rotate(down, -sign * getattr(pose, f"{side}_leg"))
        knee = hip + thigh * _THIGH * h
        shin = _rotate(thigh, -sign * getattr(pose, f"{side}_knee"))
        ankle = knee + shin * _SHIN * h
        for joint, point in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist),
                             ("hip", hip), ("knee", knee), ("ankle", ankle)):
            kp[k[f"{side}_{joint}"]] = point

    head_up = _rotate(up, pose.head_tilt)
    head_across = _rotate(head_up, 90.0)
    head_radius = max(_HEAD_RADIUS * h, 1.5)
    head_centre = shoulder_mid + head_up * (_NECK * h + head_radius)
    r = head_radius
    kp[k["nose"]] = head_centre - head_up * 0.22 * r
    kp[k["left_eye"]] = head_centre + head_up * 0.15 * r + head_across * 0.38 * r
    kp[k["right_eye"]] = head_centre + head_up * 0.15 * r - head_across * 0.38 * r
    kp[k["left_ear"]] = head_centre + head_up * 0.05 * r + head_across * 0.97 * r
    kp[k["right_ear"]] = head_centre + head_up * 0.05 * r - head_across * 0.97 * r
    return _Body(kp, pelvis, shoulder_mid, head_centre, head_radius, head_up, to_left)


def person_keypoints(person: PersonSpec) -> np.ndarray:
    """(17, 2) float64 keypoint positions in COCO order, before any visibility."""
    return _body(person).keypoints.copy()


def _shade(colour, towards, amount: float) -> np.ndarray:
    """Blend a colour towards another (amount 0 = unchanged, 1 = `towards`)."""
    mixed = (1 - amount) * np.asarray(colour, np.float64) + amount * np.asarray(towards, np.float64)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def _draw_person(canvas: _Canvas, person: PersonSpec, body: _Body, owner: int) -> None:
    h, kp, k = person.height, body.keypoints, KEYPOINT_INDEX
    base = person.colour
    # Shirt in the person's colour, trousers darker, skin-tinted head. The left side
    # is a shade lighter than the right so crossed limbs stay tellable apart.
    shirt = np.asarray(base, dtype=np.uint8)
    sleeve = {"left": _shade(base, (255, 255, 255), 0.18), "right": _shade(base, (0, 0, 0), 0.18)}
    trousers = {"left": _shade(base, (0, 0, 0), 0.42), "right": _shade(base, (0, 0, 0), 0.55)}
    skin = _shade(_SKIN, base, 0.3)
    arm_r = max(_ARM_RADIUS * h * person.thickness, _MIN_RADIUS_PX)
    leg_r = max(_LEG_RADIUS * h * person.thickness, _MIN_RADIUS_PX)
    neck_r = max(_NECK_RADIUS * h * person.thickness, _MIN_RADIUS_PX)

    def limb(a: str, b: str, radius: float, colour) -> None:
        canvas.fill(canvas.capsule(kp[k[a]], kp[k[b]], radius), colour, owner)

    # Back to front: legs, torso, neck and head, then arms so hands show over the body.
    for side in ("left", "right"):
        limb(f"{side}_hip", f"{side}_knee", leg_r, trousers[side])
        limb(f"{side}_knee", f"{side}_ankle", leg_r, trousers[side])
    # The torso widens with build, but not so far that it swallows the arms.
    across = body.to_left * h * min(person.thickness, 1.6)
    shoulder_half, hip_half = _SHOULDER_HALF_WIDTH + 0.01, _HIP_HALF_WIDTH + 0.6 * _LEG_RADIUS
    torso = [
        body.shoulder_mid + across * shoulder_half,
        body.pelvis + across * hip_half,
        body.pelvis - across * hip_half,
        body.shoulder_mid - across * shoulder_half,
    ]
    canvas.fill(canvas.convex_polygon(torso), shirt, owner)
    canvas.fill(canvas.capsule(body.shoulder_mid, body.head_centre, neck_r), skin, owner)
    r = body.head_radius
    for ear in ("left_ear", "right_ear"):
        canvas.fill(canvas.disc(kp[k[ear]], max(0.24 * r, _MIN_RADIUS_PX)), _shade(skin, (0, 0, 0), 0.15), owner)
    canvas.fill(canvas.disc(body.head_centre, r), skin, owner)
    # Hair: a darker cap over the top of the head gives the head an up direction.
    hair = canvas.disc(body.head_centre + body.head_up * 0.6 * r, 0.6 * r)
    if hair is not None:
        index, inside = hair
        # Only where the head is already this person's, so hair never grows past it.
        canvas.fill((index, inside & (canvas.owner[index] == owner)), _shade(base, (0, 0, 0), 0.65), owner)
    for eye in ("left_eye", "right_eye"):
        canvas.fill(canvas.disc(kp[k[eye]], max(0.14 * r, 0.6)), _EYE_DARK, owner)
    canvas.fill(canvas.disc(kp[k["nose"]], max(0.1 * r, 0.5)), _shade(skin, (0, 0, 0), 0.35), owner)
    for side in ("left", "right"):
        limb(f"{side}_shoulder", f"{side}_elbow", arm_r, sleeve[side])
        limb(f"{side}_elbow", f"{side}_wrist", arm_r, sleeve[side])
        canvas.fill(canvas.disc(kp[k[f"{side}_wrist"]], arm_r * 1.15), skin, owner)


# --------------------------------------------------------------------------- objects


def _block_corners(obj: ObjectSpec) -> np.ndarray:
    half_w, half_h = obj.size * obj.aspect / 2, obj.size / 2
    corners = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    c, s = math.cos(math.radians(obj.angle)), math.sin(math.radians(obj.angle))
    rotation = np.array([[c, -s], [s, c]])
    return corners @ rotation.T + [obj.centre_x, obj.centre_y]


def _object_lowest_y(obj: ObjectSpec) -> float:
    if obj.kind == "block":
        return float(_block_corners(obj)[:, 1].max())
    a, b = obj.size * obj.aspect / 2, obj.size / 2
    t = math.radians(obj.angle)
    return obj.centre_y + math.hypot(a * math.sin(t), b * math.cos(t))


def _draw_object(canvas: _Canvas, obj: ObjectSpec, owner: int) -> None:
    centre = (obj.centre_x, obj.centre_y)
    if obj.kind == "block":
        # A darker inset face makes a block read as a box, not a flat patch.
        canvas.fill(canvas.convex_polygon(_block_corners(obj)), np.asarray(obj.colour, np.uint8), owner)
        width, height = obj.size * obj.aspect, obj.size
        margin = 0.2 * min(width, height)
        inset = replace(obj, size=height - 2 * margin, aspect=(width - 2 * margin) / (height - 2 * margin))
        canvas.fill(canvas.convex_polygon(_block_corners(inset)), _shade(obj.colour, (0, 0, 0), 0.3), owner)
    else:
        half_w, half_h = obj.size * obj.aspect / 2, obj.size / 2
        canvas.fill(canvas.ellipse(centre, half_w, half_h, obj.angle), np.asarray(obj.colour, np.uint8), owner)
        # A lighter concentric highlight makes a disc read as round and solid.
        canvas.fill(canvas.ellipse(centre, half_w * 0.55, half_h * 0.55, obj.angle),
                    _shade(obj.colour, (255, 255, 255), 0.3), owner)


# --------------------------------------------------------------------------- scene


def render_scene(spec: SceneSpec, min_visible_pixels: int = 1) -> Scene:
    """Render `spec` into an image and its ground truth.

    Instances with fewer than `min_visible_pixels` visible pixels are dropped (the
    default drops only those fully hidden or fully outside the image).
    """
    height, width = int(spec.height), int(spec.width)
    rng = np.random.default_rng(spec.seed)
    rgb, base = _paint_background(spec.background, height, width, rng)
    canvas = _Canvas(rgb)
    if spec.background == "cluttered":
        _draw_clutter_lines(canvas, base, rng)

    # (lowest y, kind order, index) sorts far-to-near, with a stable tie-break.
    bodies = [_body(p) for p in spec.people]
    order = [(float(b.keypoints[:, 1].max()), 0, i) for i, b in enumerate(bodies)]
    order += [(_object_lowest_y(o), 1, i) for i, o in enumerate(spec.objects)]
    order.sort()
    for owner, (_, kind, i) in enumerate(order, start=1):
        if kind == 0:
            _draw_person(canvas, spec.people[i], bodies[i], owner)
        else:
            _draw_object(canvas, spec.objects[i], owner)

    # Sensor-like noise, so no region is perfectly flat.
    noise = rng.integers(-3, 4, size=(height, width, 3), dtype=np.int16)
    image = np.clip(canvas.rgb.astype(np.int16) + noise, 0, 255).astype(np.uint8)

    boxes, labels, keypoints, masks, areas, spec_index = [], [], [], [], [], []
    for owner, (_, kind, i) in enumerate(order, start=1):
        mask = canvas.owner == owner
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            continue
        area = int(mask[rows[0]: rows[-1] + 1].sum())
        if area < max(min_visible_pixels, 1):
            continue
        cols = np.flatnonzero(mask[rows[0]: rows[-1] + 1].any(axis=0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        masks.append(mask)
        areas.append(area)
        spec_index.append(i)
        if kind == 0:
            labels.append(LABEL_PERSON)
            keypoints.append(_keypoints_with_visibility(bodies[i].keypoints, canvas.owner, owner))
        else:
            labels.append(spec.objects[i].label)
            keypoints.append(np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32))

    n = len(labels)
    return Scene(
        spec=spec,
        image=image,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(n, 4),
        labels=np.asarray(labels, dtype=np.int64).reshape(n),
        keypoints=np.asarray(keypoints, dtype=np.float32).reshape(n, NUM_KEYPOINTS, 3),
        masks=np.asarray(masks, dtype=bool).reshape(n, height, width),
        areas=np.asarray(areas, dtype=np.float32).reshape(n),
        spec_index=np.asarray(spec_index, dtype=np.int64).reshape(n),
    )


def _keypoints_with_visibility(points: np.ndarray, owner_map: np.ndarray, owner: int) -> np.ndarray:
    height, width = owner_map.shape
    out = np.empty((len(points), 3), dtype=np.float32)
    out[:, :2] = points
    x, y = points[:, 0], points[:, 1]
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    visible = np.zeros(len(points), dtype=bool)
    cols = np.floor(x[inside]).astype(np.int64)
    rows = np.floor(y[inside]).astype(np.int64)
    visible[inside] = owner_map[rows, cols] == owner
    out[:, 2] = np.where(visible, 2.0, 1.0)
    return out


def render_batch(specs: Sequence[SceneSpec]) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """Render same-sized specs into (N, 3, H, W) uint8 images and torchvision-style
    targets (see `Scene.target`)."""
    specs = list(specs)
    if not specs:
        raise ValueError("render_batch needs at least one spec")
    sizes = {(int(s.height), int(s.width)) for s in specs}
    if len(sizes) != 1:
        raise ValueError(f"render_batch needs specs of one size, got {sorted(sizes)}")
    scenes = [render_scene(s) for s in specs]
    images = np.stack([s.image.transpose(2, 0, 1) for s in scenes])
    return np.ascontiguousarray(images), [s.target() for s in scenes]


# --------------------------------------------------------------------------- random specs


def distinct_colours(rng: np.random.Generator, n: int) -> list[tuple[int, int, int]]:
    """n saturated colours with well-separated hues (golden-ratio hue steps)."""
    start = rng.random()
    colours = []
    for i in range(n):
        hue = (start + i * 0.618034) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 0.95), rng.uniform(0.65, 0.95))
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours


def random_pose(rng: np.random.Generator, jitter_deg: float = 8.0) -> PoseAngles:
    """A named pose, maybe mirrored, with every angle jittered."""
    names = sorted(POSES)
    pose = POSES[names[int(rng.integers(len(names)))]]
    if rng.random() < 0.5:
        pose = pose.mirrored()
    values = {
        name: round(getattr(pose, name) + float(rng.normal(0, jitter_deg)), 1)
        for name in PoseAngles.__dataclass_fields__
    }
    values["lean"] = round(pose.lean + float(rng.normal(0, jitter_deg / 2)), 1)
    return PoseAngles(**values)


def random_scene_spec(
    height: int,
    width: int,
    seed: int,
    min_people: int = 0,
    max_people: int = 3,
    max_objects: int = 2,
) -> SceneSpec:
    """A random scene drawn from numpy Generator(seed): people 30%-90% of the short
    side tall in assorted poses, 0..max_objects blocks and discs, overlaps and
    border-touching allowed."""
    if not 0 <= min_people <= max_people:
        raise ValueError(f"need 0 <= min_people <= max_people, got {min_people}, {max_people}")
    rng = np.random.default_rng(seed)
    short = min(height, width)
    n_people = int(rng.integers(min_people, max_people + 1))
    n_objects = int(rng.integers(0, max_objects + 1))
    colours = distinct_colours(rng, n_people + n_objects)
    people = tuple(
        PersonSpec(
            centre_x=round(float(rng.uniform(0.05, 0.95) * width), 1),
            centre_y=round(float(rng.uniform(0.2, 0.8) * height), 1),
            height=round(float(rng.uniform(0.3, 0.9) * short), 1),
            pose=random_pose(rng),
            colour=colours[i],
            thickness=round(float(rng.uniform(0.8, 1.3)), 2),
        )
        for i in range(n_people)
    )
    objects = tuple(
        ObjectSpec(
            kind=OBJECT_KINDS[int(rng.integers(len(OBJECT_KINDS)))],
            centre_x=round(float(rng.uniform(0.05, 0.95) * width), 1),
            centre_y=round(float(rng.uniform(0.05, 0.95) * height), 1),
            size=round(float(rng.uniform(0.1, 0.35) * short), 1),
            colour=colours[n_people + i],
            aspect=round(float(np.exp(rng.uniform(-0.6, 0.6))), 2),
            angle=round(float(rng.uniform(-45, 45)), 1),
        )
        for i in range(n_objects)
    )
    background = BACKGROUND_KINDS[int(rng.choice(3, p=[0.1, 0.2, 0.7]))]
    return SceneSpec(
        height=height,
        width=width,
        seed=int(rng.integers(2**31 - 1)),
        people=people,
        objects=objects,
        background=background,
    )
