"""Pictures of failing and ambiguous cases: the input with both answers drawn on it.

A failing or ambiguous check keeps what it compared (deploy_parity.check.KeptAnswers:
the feed and both outputs) and the recorder holds a bounded number of them, so a picture
costs no inference (an xdist worker hands its kept answers over as files,
reports/answers.py). Only where nothing was kept (a case beyond the bound, or answers
that are not arrays by name) is the case re-run from its record (model, backend, size,
batch, dtypes, seed). Each check compares two answers, and the picture shows those two:

  parity       the eager PyTorch reference  vs  the backend
  batch        the image run alone          vs  the same image inside the batch
  determinism  the backend's first run      vs  its second run
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from deploy_parity.inputs import make_feed, take_sample

# First answer drawn in green, second in magenta: distinguishable by most colour-blind readers.
FIRST_COLOUR, SECOND_COLOUR = "#1b9e77", "#d01c8b"
MAX_INSTANCES_DRAWN = 30
# Instances drawn when the case declares no score threshold.
DEFAULT_SCORE_THRESHOLD = 0.3
CHECKS_WITH_PICTURES = ("parity", "batch", "determinism")
_SAMPLE = re.compile(r"(?:batch\[(\d+)\]|sample (\d+))")


@dataclass
class TwoAnswers:
    """The input image and the two answers a check compared, as Instances of one image."""

    image: np.ndarray  # (H, W, 3) uint8
    first: object
    second: object
    first_label: str
    second_label: str
    sample: int


def problem_sample(record: dict) -> int:
    """The batch sample of the first failing (else ambiguous) comparison, 0 if none says."""
    for verdict in ("fail", "ambiguous"):
        for comparison in record.get("comparisons", []):
            if comparison.get("verdict") == verdict:
                match = _SAMPLE.search(comparison.get("output", ""))
                if match:
                    return int(match.group(1) or match.group(2))
    return 0


def _image_of(case, feed: dict, sample: int) -> np.ndarray:
    spec = next(s for s in case.inputs if s.role == "image")
    image = np.asarray(feed[spec.name][sample])  # (C, H, W)
    if image.dtype != np.uint8:  # float inputs are 0..1 (inputs.as_image_dtype)
        image = (np.clip(image.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    image = np.moveaxis(image, 0, -1)
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]


def rerun(record: dict, case, backend, pool):
    """Run the record's case again: the KeptAnswers its check would have kept. Only for
    records whose answers were not kept (see the module's docstring)."""
    from deploy_parity.check import KeptAnswers

    height, width, batch, seed = record["height"], record["width"], record["batch"], record["seed"]
    dtypes = tuple(record["dtypes"])
    feed = make_feed(case, height, width, batch, seed, dtypes)
    runner = pool.get(case, backend, case.deploy_target(height, width, dtypes))
    if record["check"] == "parity":
        return KeptAnswers("parity", feed, pool.reference(case).infer(feed), runner.infer(feed))
    if record["check"] == "batch":
        return KeptAnswers("batch", feed, [runner.infer(take_sample(feed, i)) for i in range(batch)],
                           runner.infer(feed))
    if record["check"] == "determinism":
        return KeptAnswers("determinism", feed, runner.infer(feed), runner.infer(feed))
    raise ValueError(f"no picture for check {record['check']!r}")


def two_answers(record: dict, case, backend_name: str, kept) -> TwoAnswers:
    """The picture's two answers, for the record's problem sample, from what its check compared."""
    batch = record["batch"]
    sample = min(problem_sample(record), batch - 1)
    size = (record["height"], record["width"])
    first, second, first_at = kept.first, kept.second, sample
    if kept.check == "parity":
        labels = ("reference (eager PyTorch)", backend_name)
    elif kept.check == "batch":
        first, first_at = kept.first[sample], 0  # the image run alone is a batch of one
        labels = (f"{backend_name}, image alone", f"{backend_name}, inside batch of {batch}")
    elif kept.check == "determinism":
        labels = (f"{backend_name}, run 1", f"{backend_name}, run 2")
    else:
        raise ValueError(f"no picture for check {kept.check!r}")
    return TwoAnswers(
        image=_image_of(case, kept.feed, sample),
        first=case.to_instances(first, first_at, size),
        second=case.to_instances(second, sample, size),
        first_label=labels[0],
        second_label=labels[1],
        sample=sample,
    )


def _shown(instances, threshold: float):
    order = np.argsort(-instances.scores, kind="stable")
    keep = [i for i in order if instances.scores[i] >= threshold][:MAX_INSTANCES_DRAWN]
    return instances.select(np.asarray(keep, dtype=int))


def _mask_layer(instances, height: int, width: int) -> np.ndarray:
    """Union of the instances' masks at image size; per-ROI (M x M) masks are pasted into their boxes."""
    layer = np.zeros((height, width), dtype=bool)
    masks = instances.masks
    if masks is None or len(masks) == 0:
        return layer
    for mask, box in zip(np.asarray(masks, dtype=np.float32), instances.boxes):
        if mask.shape == (height, width):
            layer |= mask >= 0.5
            continue
        x1, y1, x2, y2 = [int(round(v)) for v in box]
        x1, y1 = max(x1, 0), max(y1, 0)
        x2, y2 = min(x2, width), min(y2, height)
        if x2 <= x1 or y2 <= y1:
            continue
        rows = np.minimum(((np.arange(y1, y2) - y1 + 0.5) * mask.shape[0] / (y2 - y1)).astype(int), mask.shape[0] - 1)
        cols = np.minimum(((np.arange(x1, x2) - x1 + 0.5) * mask.shape[1] / (x2 - x1)).astype(int), mask.shape[1] - 1)
        layer[y1:y2, x1:x2] |= mask[np.ix_(rows, cols)] >= 0.5
    return layer


def _draw(ax, instances, colour: str, linestyle: str, marker: str) -> None:
    from matplotlib.patches import Rectangle

    for x1, y1, x2, y2 in instances.boxes:
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.2,
                               linestyle=linestyle))
    if instances.keypoints is not None and len(instances.keypoints):
        points = np.asarray(instances.keypoints, dtype=float).reshape(-1, instances.keypoints.shape[-1])
        ax.scatter(points[:, 0], points[:, 1], s=14, c=colour, marker=marker, linewidths=1.0)


def draw(answers: TwoAnswers, case, title: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    height, width = answers.image.shape[:2]
    threshold = case.score_threshold if case.score_threshold is not None else DEFAULT_SCORE_THRESHOLD
    first, second = _shown(answers.first, threshold), _shown(answers.second, threshold)
    # The zoo's images are small (64-320 px): scale to ~6 inches on the long side.
    # Fixed margins instead of a layout engine: constrained/tight layout draws twice.
    scale = 6.0 / max(height, width)
    fig_width, fig_height = max(width * scale, 4.0), height * scale + 1.2
    figure = Figure(figsize=(fig_width, fig_height), dpi=90)
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0.02, 0.6 / fig_height, 0.96, (fig_height - 1.2) / fig_height))
    ax.imshow(answers.image)
    for instances, colour in ((first, FIRST_COLOUR), (second, SECOND_COLOUR)):
        layer = _mask_layer(instances, height, width)
        if layer.any():
            rgba = np.zeros((height, width, 4), dtype=float)
            rgba[layer] = [*_rgb(colour), 0.35]
            ax.imshow(rgba)
    _draw(ax, first, FIRST_COLOUR, "-", "o")
    _draw(ax, second, SECOND_COLOUR, "--", "x")
    # Keypoints far off the image (a transposed grid) would shrink the image to a dot.
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    ax.legend(handles=[
        Line2D([], [], color=FIRST_COLOUR, marker="o", label=f"{answers.first_label}: {len(first)} shown"),
        Line2D([], [], color=SECOND_COLOUR, marker="x", linestyle="--",
               label=f"{answers.second_label}: {len(second)} shown"),
    ], fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def _rgb(colour: str) -> tuple:
    return tuple(int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))


def picture_title(record: dict, sample: int) -> str:
    return (f"{record['check']} {record['model']} on {record['backend']} ({record['precision']}): "
            f"{record['verdict']}\n{record['height']}x{record['width']}, batch {record['batch']}, sample {sample}, "
            f"dtypes {','.join(record['dtypes'])}, seed {record['seed']}")


def render_case(record: dict, case, backend, pool, path: Path, kept=None) -> Optional[str]:
    """Draw the record's case into `path` from `kept` (what its check compared), or by
    re-running it on `pool` when nothing was kept; None when done, else why there is no picture."""
    if record["check"] not in CHECKS_WITH_PICTURES:
        return f"no picture for the {record['check']} check"
    try:
        if kept is None:
            kept = rerun(record, case, backend, pool)
        answers = two_answers(record, case, backend.name, kept)
        draw(answers, case, picture_title(record, answers.sample), path)
    except Exception as error:  # noqa: BLE001 - a report must not die on one case it cannot redraw
        return f"could not draw this case: {type(error).__name__}: {error}".splitlines()[0]
    return None
