"""Hypothesis building blocks for the comparator tests: instances that never overlap.

Each instance gets its own cell of a grid, so two different instances have IoU 0 and
a correct matching is unambiguous; what a test then changes is the only difference.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

KEYPOINTS = 17


@st.composite
def grid_layout(draw, min_size=1, max_size=12, grid=8, cell=80, margin=(2, 10), extent=(45 / 80, 65 / 80)):
    """(rng, boxes (R, 4)) with R boxes in distinct cells of a grid x grid layout."""
    n = draw(st.integers(min_size, min(max_size, grid * grid)))
    cells = np.array(draw(st.lists(st.integers(0, grid * grid - 1), min_size=n, max_size=n, unique=True)), dtype=int)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x1 = (cells % grid) * cell + rng.uniform(*margin, n)
    y1 = (cells // grid) * cell + rng.uniform(*margin, n)
    w, h = rng.uniform(*extent, n) * cell, rng.uniform(*extent, n) * cell
    return rng, np.stack([x1, y1, x1 + w, y1 + h], axis=1)


def keypoints_inside(rng, boxes, k=KEYPOINTS):
    """(R, k, 3): x, y uniformly inside each box, scores in [0.3, 1]."""
    x1, y1, x2, y2 = (boxes[:, i : i + 1] for i in range(4))
    n = len(boxes)
    return np.stack(
        [x1 + rng.uniform(0, 1, (n, k)) * (x2 - x1), y1 + rng.uniform(0, 1, (n, k)) * (y2 - y1),
         rng.uniform(0.3, 1.0, (n, k))],
        axis=-1,
    )


@st.composite
def one_instance(draw, instances):
    """(inst, i): instances drawn from the strategy `instances`, and one of them picked."""
    inst = draw(instances)
    return inst, draw(st.integers(0, len(inst) - 1))


@st.composite
def one_keypoint(draw, instances):
    """(inst, i, j): instances drawn from `instances`, one of them and one of its keypoints picked."""
    inst, i = draw(one_instance(instances))
    return inst, i, draw(st.integers(0, inst.keypoints.shape[1] - 1))
