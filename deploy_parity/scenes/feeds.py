"""Model-case feeds rendered from synthetic scenes instead of noise.

Sample i of a feed is rendered from its own seed derived from (seed, i), so an image
is the same whether it runs alone or inside a batch (the batch-consistency property
relies on it) and every backend sees identical bytes.
"""

from __future__ import annotations

import functools

import numpy as np

from deploy_parity.inputs import as_image_dtype
from deploy_parity.scenes.render import random_scene_spec, render_scene


def sample_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


@functools.lru_cache(maxsize=128)
def rendered_sample(height: int, width: int, seed: int, index: int, min_people: int, max_people: int,
                    max_objects: int):
    """Sample `index` of seed `seed`'s scenes, rendered once per process and shared.

    The suites ask for one sample many times: alone and inside a batch, as float32 and
    as uint8, on every backend. Bounded (128 scenes of at most 320x320); the image is
    read-only, since every caller sees the same array."""
    scene = render_scene(random_scene_spec(height, width, sample_seed(seed, index), min_people=min_people,
                                           max_people=max_people, max_objects=max_objects))
    scene.image.flags.writeable = False
    return scene


def scene_images(height: int, width: int, batch: int, seed: int, min_people: int = 1, max_people: int = 3,
                 max_objects: int = 2) -> tuple:
    """(N, 3, H, W) uint8 images and the rendered scenes (with their ground truth)."""
    scenes = [rendered_sample(height, width, seed, i, min_people, max_people, max_objects) for i in range(batch)]
    images = np.stack([s.image.transpose(2, 0, 1) for s in scenes])
    return np.ascontiguousarray(images), scenes


def scene_feed(case_inputs, min_people: int = 1, max_people: int = 3, max_objects: int = 2):
    """A ModelCase.make_feed rendering scenes with at least `min_people` people per image."""

    def make_feed(height: int, width: int, batch: int, seed: int, dtypes) -> dict:
        images, _ = scene_images(height, width, batch, seed, min_people, max_people, max_objects)
        feed = {}
        for spec, dtype in zip(case_inputs, dtypes):
            if spec.role == "image":
                feed[spec.name] = as_image_dtype(images, dtype)
            elif spec.role == "image_size_wh":
                feed[spec.name] = np.tile(np.array([[width, height]], dtype=dtype), (batch, 1))
        return feed

    return make_feed
