"""Hypothesis strategies over scene specs and image sizes.

Every draw is laid out so that Hypothesis's shrinking (towards smaller integers and
the first element of a `sampled_from`) heads for simple scenes: fewer instances,
larger ones, centred, standing upright, on a plain background, and square images.
"""

from __future__ import annotations

import math
from typing import Optional

from hypothesis import strategies as st

from deploy_parity.scenes.render import (
    BACKGROUND_KINDS,
    OBJECT_KINDS,
    POSES,
    ObjectSpec,
    PersonSpec,
    PoseAngles,
    SceneSpec,
)

# Saturated, well-separated colours; instances in one scene take consecutive entries.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (214, 40, 40), (40, 110, 220), (240, 190, 20), (30, 170, 90),
    (170, 60, 200), (250, 120, 20), (20, 190, 200), (230, 70, 160),
)  # fmt: skip

# "standing" first: the simplest pose is what a failing example shrinks to.
POSE_NAMES: tuple[str, ...] = ("standing",) + tuple(sorted(n for n in POSES if n != "standing"))

# Where an instance goes. "centred_anywhere" first: its offsets shrink to the centre.
PLACEMENTS: tuple[str, ...] = ("centred_anywhere", "overlapping_previous", "at_border")

_MIN_PERSON_PX = 8.0
_MIN_OBJECT_PX = 4.0


@st.composite
def scene_sizes(
    draw,
    min_side: int = 32,
    max_side: int = 320,
    multiple_of: int = 1,
    max_aspect: float = 4.0,
) -> tuple[int, int]:
    """(height, width), both multiples of `multiple_of` in [min_side, max_side], with
    max(h, w) / min(h, w) <= max_aspect. Shrinks towards small squares."""
    if multiple_of < 1 or max_aspect < 1:
        raise ValueError(f"need multiple_of >= 1 and max_aspect >= 1, got {multiple_of}, {max_aspect}")
    lo, hi = math.ceil(min_side / multiple_of), max_side // multiple_of
    if lo > hi or hi < 1:
        raise ValueError(f"no multiple of {multiple_of} lies in [{min_side}, {max_side}]")
    lo = max(lo, 1)
    h = draw(st.integers(lo, hi))
    # The width is drawn as an offset from the height so that it shrinks to a square.
    w_lo = max(lo, math.ceil(h / max_aspect - 1e-9))
    w_hi = min(hi, math.floor(h * max_aspect + 1e-9))
    w = h + draw(st.integers(w_lo - h, w_hi - h))
    return h * multiple_of, w * multiple_of


@st.composite
def pose_angles(draw, max_jitter_deg: int = 20) -> PoseAngles:
    """A named pose, possibly mirrored, with each angle jittered by whole degrees."""
    pose = POSES[draw(st.sampled_from(POSE_NAMES))]
    if draw(st.booleans()):
        pose = pose.mirrored()
    jitter = st.integers(-max_jitter_deg, max_jitter_deg)
    return PoseAngles(**{
        name: getattr(pose, name) + draw(jitter) for name in PoseAngles.__dataclass_fields__
    })


@st.composite
def centres_anywhere(draw, height: int, width: int) -> tuple[float, float]:
    """A point in the image, as whole-pixel offsets from its centre (shrinks to the centre)."""
    dx = draw(st.integers(-(width // 2), width // 2))
    dy = draw(st.integers(-(height // 2), height // 2))
    return width / 2 + dx, height / 2 + dy


@st.composite
def centres_at_border(draw, height: int, width: int, reach: float) -> tuple[float, float]:
    """A point on or just past one of the image's edges (up to `reach` px outside), so
    an instance centred there is cut by the border."""
    edge = draw(st.sampled_from(("left", "right", "top", "bottom")))
    outward = draw(st.integers(0, max(int(reach), 0)))
    if edge in ("left", "right"):
        y = height / 2 + draw(st.integers(-(height // 2), height // 2))
        return (-outward if edge == "left" else width + outward), y
    x = width / 2 + draw(st.integers(-(width // 2), width // 2))
    return x, (-outward if edge == "top" else height + outward)


@st.composite
def centres_near(draw, point: tuple[float, float], reach: float) -> tuple[float, float]:
    """A point within `reach` px of `point` (in each axis): instances placed here overlap."""
    r = max(int(reach), 0)
    return point[0] + draw(st.integers(-r, r)), point[1] + draw(st.integers(-r, r))


def _fraction(draw, largest: float, smallest: float, steps: int = 16) -> float:
    """A fraction from largest down to smallest; shrinks to `largest`."""
    return largest - (largest - smallest) * draw(st.integers(0, steps)) / steps


def _size_and_centre(draw, height: int, width: int, largest: float, smallest: float, min_px: float,
                     centres: Optional[st.SearchStrategy]) -> tuple[float, float, float]:
    """An instance's size, `largest` down to `smallest` of the short side (at least min_px),
    then its centre from `centres` (anywhere without one): (size, x, y). Both draws shrink
    to the largest instance, centred."""
    size = max(_fraction(draw, largest, smallest) * min(height, width), min_px)
    cx, cy = draw(centres if centres is not None else centres_anywhere(height, width))
    return float(size), float(cx), float(cy)


def _colour(draw, colour: Optional[tuple[int, int, int]]) -> tuple[int, int, int]:
    """`colour` when one is given, else one drawn from the palette."""
    return colour if colour is not None else draw(st.sampled_from(PALETTE))


@st.composite
def person_specs(
    draw,
    height: int,
    width: int,
    centres: Optional[st.SearchStrategy] = None,
    colour: Optional[tuple[int, int, int]] = None,
) -> PersonSpec:
    """A person 25%-90% of the short side tall (at least 8 px), shrinking to the
    largest, standing, centred one."""
    person_height, cx, cy = _size_and_centre(draw, height, width, 0.9, 0.25, _MIN_PERSON_PX, centres)
    return PersonSpec(
        centre_x=cx,
        centre_y=cy,
        height=person_height,
        pose=draw(pose_angles()),
        colour=_colour(draw, colour),
        thickness=1.0 + draw(st.integers(-4, 6)) / 20,
    )


@st.composite
def object_specs(
    draw,
    height: int,
    width: int,
    centres: Optional[st.SearchStrategy] = None,
    colour: Optional[tuple[int, int, int]] = None,
) -> ObjectSpec:
    """A block or disc 8%-50% of the short side (at least 4 px), shrinking to the
    largest, centred, unrotated square block."""
    size, cx, cy = _size_and_centre(draw, height, width, 0.5, 0.08, _MIN_OBJECT_PX, centres)
    return ObjectSpec(
        kind=draw(st.sampled_from(OBJECT_KINDS)),
        centre_x=cx,
        centre_y=cy,
        size=size,
        colour=_colour(draw, colour),
        aspect=2.0 ** (draw(st.integers(-4, 4)) / 4),
        angle=float(draw(st.integers(-45, 45))),
    )


@st.composite
def scene_specs(
    draw,
    height: Optional[int] = None,
    width: Optional[int] = None,
    max_people: int = 3,
    max_objects: int = 2,
    allow_empty: bool = True,
) -> SceneSpec:
    """A scene of 0..max_people people and 0..max_objects objects, each placed
    anywhere, overlapping an earlier instance (so one occludes the other) or cut by
    the border. Without height and width the size is drawn from `scene_sizes(32, 256)`.
    The empty scene (a control) is drawn unless allow_empty is False; shrinking goes
    to fewer, larger, centred instances."""
    if (height is None) != (width is None):
        raise ValueError("give both height and width, or neither")
    if height is None:
        height, width = draw(scene_sizes(32, 256))
    if not allow_empty and max_people + max_objects < 1:
        raise ValueError("allow_empty=False needs max_people + max_objects >= 1")

    min_people = 0 if allow_empty or max_people == 0 else 1
    n_people = draw(st.integers(min_people, max_people))
    min_objects = 0 if allow_empty or n_people > 0 else 1
    n_objects = draw(st.integers(min_objects, max_objects))

    short = min(height, width)
    first_colour = draw(st.integers(0, len(PALETTE) - 1))
    placed: list[tuple[float, float]] = []

    def centre_strategy(reach: float) -> st.SearchStrategy:
        placement = draw(st.sampled_from(PLACEMENTS))
        if placement == "overlapping_previous" and placed:
            return centres_near(draw(st.sampled_from(placed)), reach)
        if placement == "at_border":
            return centres_at_border(height, width, reach)
        return centres_anywhere(height, width)

    people, objects = [], []
    for i in range(n_people + n_objects):
        colour = PALETTE[(first_colour + i) % len(PALETTE)]
        if i < n_people:
            spec = draw(person_specs(height, width, centre_strategy(0.3 * short), colour))
            placed.append((spec.centre_x, spec.centre_y))
            people.append(spec)
        else:
            spec = draw(object_specs(height, width, centre_strategy(0.2 * short), colour))
            placed.append((spec.centre_x, spec.centre_y))
            objects.append(spec)

    return SceneSpec(
        height=height,
        width=width,
        seed=draw(st.integers(0, 2**31 - 1)),
        people=tuple(people),
        objects=tuple(objects),
        background=draw(st.sampled_from(BACKGROUND_KINDS)),
    )
