"""Training batches and held-out scenes for the single-stage trainers of the zoo.

tools/train_pose_rtmo.py (TinyRTMOPose) and tools/train_yolo.py (Ultralytics YOLO pose
and segmentation) draw their training images at TRAIN_SIDES, height and width
independently, render every image from its own key (seed, 0, batch, image), and replay
one batch in two (ReplayedBatches). Their held-out scenes have keys (seed, 1, scene),
a part of the key space training never uses.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

import numpy as np

from deploy_parity.scenes.render import random_scene_spec, render_scene
from models.training.loop import derived_seed

# Sides the training images are drawn from (height and width independently, so most
# images are rectangular). Multiples of 32, as both models' strides require, from the
# suites' smallest size up to where a CPU step stays cheap.
TRAIN_SIDES = (64, 96, 128, 160, 192)

Batch = TypeVar("Batch")


class ReplayedBatches(Generic[Batch]):
    """Rendering a batch costs about as much CPU as a training step on it, so every
    other step replays a batch drawn at random from the last `capacity` rendered ones:
    a second look at the same scenes, far enough apart to act as a second epoch rather
    than a repeated step. Mirroring instead would teach the model that a person's left
    side may be the darker one, which the renderer never draws.

    prepare(scenes, height, width) turns the rendered scenes into what the trainer's
    loss reads; it runs once per rendered batch, so a replay costs nothing."""

    def __init__(self, rng: np.random.Generator, seed: int, batch: int,
                 prepare: Callable[[list, int, int], Batch], capacity: int = 100):
        self.rng, self.seed, self.batch, self.prepare, self.capacity = rng, seed, batch, prepare, capacity
        self.recent: list = []
        self.rendered = 0

    def next(self, step: int) -> Batch:
        """The batch of training step `step`: fresh on even steps, a replay on odd ones."""
        if step % 2 == 1 and self.recent:
            return self.recent[int(self.rng.integers(len(self.recent)))]
        height, width = (int(v) for v in self.rng.choice(TRAIN_SIDES, size=2))
        scenes = [render_scene(random_scene_spec(height, width, derived_seed(self.seed, 0, self.rendered, i),
                                                 min_people=0, max_people=3, max_objects=3))
                  for i in range(self.batch)]
        self.rendered += 1
        fresh = self.prepare(scenes, height, width)
        self.recent = (self.recent + [fresh])[-self.capacity :]
        return fresh


def training_description() -> dict:
    """What a training record says about the training scenes."""
    return {"train_sides": list(TRAIN_SIDES),
            "train_scenes": "random_scene_spec(h, w, SeedSequence([seed, 0, n, i]), 0..3 people, 0..3 objects); "
                            "every other step replays one of the last 100 batches"}


def held_out_scenes(seed: int, count: int, sizes: tuple) -> list:
    """`count` scenes never trained on, with 1..3 people and 0..2 blocks or discs each,
    at `sizes` ((height, width) pairs) in turn."""
    scenes = []
    for i in range(count):
        height, width = sizes[i % len(sizes)]
        spec = random_scene_spec(height, width, derived_seed(seed, 1, i), min_people=1, max_people=3, max_objects=2)
        scenes.append(render_scene(spec))
    return scenes


def held_out_description(count: int, sizes: tuple) -> dict:
    """What a training record says about held_out_scenes(seed, count, sizes)."""
    return {"scenes": count, "sizes_hw": [list(size) for size in sizes],
            "scene_seeds": "SeedSequence([seed, 1, i]), 1..3 people, 0..2 objects"}
