"""Deterministic feeds for a model case.

Every sample i of a feed comes from its own generator seeded with (seed, i), so the
same image appears whether it is run alone or inside a batch, and every backend sees
identical bytes. Models whose reference needs real content (people, objects) give
the case a `make_feed` that renders synthetic scenes instead of noise.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Optional, Sequence

import numpy as np

from deploy_parity.errors import HarnessError


def image_uint8(height: int, width: int, seed: int, sample: int, channels: int = 3) -> np.ndarray:
    """Smooth noise plus a few bright blobs: structure at several scales, unlike white noise."""
    rng = np.random.default_rng([seed, sample])
    coarse = rng.uniform(0, 255, size=(channels, max(2, height // 16), max(2, width // 16)))
    rows = np.linspace(0, coarse.shape[1] - 1, height)
    cols = np.linspace(0, coarse.shape[2] - 1, width)
    r0 = np.floor(rows).astype(int).clip(0, coarse.shape[1] - 2)
    c0 = np.floor(cols).astype(int).clip(0, coarse.shape[2] - 2)
    fr = (rows - r0)[None, :, None]
    fc = (cols - c0)[None, None, :]
    top = coarse[:, r0][:, :, c0] * (1 - fc) + coarse[:, r0][:, :, c0 + 1] * fc
    bottom = coarse[:, r0 + 1][:, :, c0] * (1 - fc) + coarse[:, r0 + 1][:, :, c0 + 1] * fc
    image = top * (1 - fr) + bottom * fr
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(0.05, 0.2) * min(height, width)
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < radius**2
        image[:, blob] = rng.uniform(0, 255, size=(channels, 1))
    # Noise last: flat regions would give neighbouring cells bit-identical features, and
    # so exact score ties that no backend is obliged to break the same way.
    image += rng.normal(0, 12, size=image.shape)
    return image.clip(0, 255).astype(np.uint8)


def as_image_dtype(image_u8: np.ndarray, dtype: str) -> np.ndarray:
    """uint8 stays 0..255; float inputs are 0..1 (the models' declared convention)."""
    if dtype == "uint8":
        return image_u8
    if np.dtype(dtype).kind == "f":
        return (image_u8.astype(np.float32) / 255.0).astype(dtype)
    raise HarnessError(f"no image convention for dtype {dtype}")


def make_feed(case, height: int, width: int, batch: int, seed: int, dtypes: Optional[Sequence[str]] = None) -> dict:
    """The feed for one example: {input name: array} in the requested dtypes."""
    dtypes = tuple(dtypes or case.default_dtypes())
    if len(dtypes) != len(case.inputs):
        raise HarnessError(f"{case.name}: {len(dtypes)} dtypes for {len(case.inputs)} inputs")
    if case.make_feed is not None:
        return case.make_feed(height=height, width=width, batch=batch, seed=seed, dtypes=dtypes)
    feed = {}
    for spec, dtype in zip(case.inputs, dtypes):
        if spec.role == "image":
            images = np.stack([image_uint8(height, width, seed, i, spec.channels) for i in range(batch)])
            feed[spec.name] = as_image_dtype(images, dtype)
        elif spec.role == "image_size_wh":
            feed[spec.name] = np.tile(np.array([[width, height]], dtype=dtype), (batch, 1))
    return feed


def take_sample(feed: dict, index: int) -> dict:
    """Sample `index` of a batched feed, as a batch of one."""
    return {name: np.ascontiguousarray(array[index : index + 1]) for name, array in feed.items()}


def array_bytes(value) -> int:
    """Bytes held by the arrays of a feed, an outputs dict, or a list of them."""
    if isinstance(value, dict):
        return sum(array_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(array_bytes(v) for v in value)
    return int(getattr(value, "nbytes", 0))


class FeedCache:
    """Feeds rendered once per example and shared by every check and backend that uses them.

    Parity, batch consistency and determinism draw the same examples on every backend
    (one Hypothesis seed per property), and rendering a scene costs more than a small
    model's inference, so a feed is rendered once and handed out again. Bounded: least
    recently used feeds go first once the arrays held pass `max_bytes`.

    The arrays are read-only: a backend that tried to write into its input (an in-place
    normalisation) would otherwise change what every later backend is fed. The PyTorch
    runner copies a read-only feed before handing it to the module for that reason.
    """

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = max_bytes
        self._feeds: "OrderedDict[tuple, dict]" = OrderedDict()
        self._bytes = 0
        self.rendered = 0  # feeds built by make_feed
        self.served = 0  # feeds handed out (rendered + reused)
        self.render_seconds = 0.0
        self._distinct: set = set()
        self._cases: dict = {}

    @property
    def distinct(self) -> int:
        """Distinct examples asked for: rendered - distinct is what the bound cost."""
        return len(self._distinct)

    def get(self, case, height: int, width: int, batch: int, seed: int, dtypes: Sequence[str]) -> dict:
        key = (id(case), height, width, batch, seed, tuple(dtypes))
        self._cases.setdefault(id(case), case)  # held, so its id is not reused by another case
        self.served += 1
        self._distinct.add(key)
        feed = self._feeds.get(key)
        if feed is not None:
            self._feeds.move_to_end(key)
            return feed
        start = time.perf_counter()
        feed = make_feed(case, height, width, batch, seed, dtypes)
        self.render_seconds += time.perf_counter() - start
        self.rendered += 1
        for array in feed.values():
            if isinstance(array, np.ndarray):
                array.flags.writeable = False
        self._feeds[key] = feed
        self._bytes += array_bytes(feed)
        while self._bytes > self.max_bytes and len(self._feeds) > 1:
            _, old = self._feeds.popitem(last=False)
            self._bytes -= array_bytes(old)
        return feed

    def figures(self) -> dict:
        return {"feeds_served": self.served, "feeds_rendered": self.rendered, "feeds_distinct": self.distinct,
                "render_seconds": round(self.render_seconds, 3)}

