"""Render a grid of synthetic scenes with their ground truth overlaid, for a person to look at.

Each scene gets two panels: the raw image the model sees, and the same image with
masks tinted, boxes drawn and keypoints plus skeleton marked (left side green, right
side orange; filled = visible v=2, hollow = hidden or outside v=1).

    python tools/show_scenes.py --out /tmp/scenes.png --count 6 --seed 0
    python tools/show_scenes.py --size 320x320 --size 160x480 --size 97x203

Uses matplotlib for the layout when it is installed, otherwise PIL alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy_parity.scenes import (  # noqa: E402
    CLASS_NAMES,
    FLIP_PAIRS,
    SKELETON,
    Scene,
    random_scene_spec,
    render_scene,
)

_LABEL_TINT = {1: (255, 60, 60), 2: (60, 120, 255), 3: (255, 220, 40)}
_LEFT, _RIGHT, _MIDDLE = (40, 230, 80), (255, 150, 30), (255, 255, 255)
_LEFT_KEYPOINTS = {left for left, _ in FLIP_PAIRS}
_RIGHT_KEYPOINTS = {right for _, right in FLIP_PAIRS}


def _keypoint_colour(index: int):
    if index in _LEFT_KEYPOINTS:
        return _LEFT
    if index in _RIGHT_KEYPOINTS:
        return _RIGHT
    return _MIDDLE


def overlay(scene: Scene, zoom: int = 2) -> Image.Image:
    """The scene's image, upscaled by `zoom`, with masks, boxes and keypoints drawn on."""
    tinted = scene.image.astype(np.float32)
    for mask, label in zip(scene.masks, scene.labels):
        tinted[mask] = 0.55 * tinted[mask] + 0.45 * np.array(_LABEL_TINT[int(label)], np.float32)
    height, width = scene.image.shape[:2]
    picture = Image.fromarray(tinted.astype(np.uint8)).resize(
        (width * zoom, height * zoom), Image.NEAREST
    )
    draw = ImageDraw.Draw(picture)
    for box, label, keypoints in zip(scene.boxes, scene.labels, scene.keypoints):
        draw.rectangle([v * zoom for v in box], outline=_LABEL_TINT[int(label)], width=2)
        draw.text((box[0] * zoom + 2, box[1] * zoom + 1), CLASS_NAMES[int(label)], fill=(255, 255, 255))
        if int(label) != 1:
            continue
        points = keypoints[:, :2] * zoom
        for a, b in SKELETON:
            if keypoints[a, 2] > 0 and keypoints[b, 2] > 0:
                draw.line([tuple(points[a]), tuple(points[b])], fill=(255, 255, 255), width=1)
        for index, (x, y) in enumerate(points):
            r = 3
            colour = _keypoint_colour(index)
            if keypoints[index, 2] == 2:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(0, 0, 0))
            else:
                draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=1)
    return picture


def _panels(scenes: list[Scene], zoom: int) -> list[tuple[str, Image.Image, Image.Image]]:
    out = []
    for scene in scenes:
        h, w = scene.image.shape[:2]
        raw = Image.fromarray(scene.image).resize((w * zoom, h * zoom), Image.NEAREST)
        title = f"{h}x{w} seed={scene.spec.seed % 10000} R={len(scene)} {scene.spec.background}"
        out.append((title, raw, overlay(scene, zoom)))
    return out


def _save_with_matplotlib(panels, out: Path, columns: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(panels) // columns)
    # Size the figure from the panels' pixels so they are shown about 1:1, not resampled.
    dpi = 100
    cell_w = max(max(raw.width, annotated.width) for _, raw, annotated in panels)
    cell_h = max(max(raw.height, annotated.height) for _, raw, annotated in panels)
    figsize = (2 * columns * (cell_w + 20) / dpi, rows * (cell_h + 40) / dpi)
    fig, axes = plt.subplots(rows, 2 * columns, figsize=figsize, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (title, raw, annotated) in enumerate(panels):
        r, c = divmod(i, columns)
        axes[r, 2 * c].imshow(raw, interpolation="nearest")
        axes[r, 2 * c].set_title(title, fontsize=9)
        axes[r, 2 * c + 1].imshow(annotated, interpolation="nearest")
        axes[r, 2 * c + 1].set_title("ground truth", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)


def _save_with_pil(panels, out: Path, columns: int) -> None:
    cell_w = max(max(raw.width, annotated.width) for _, raw, annotated in panels)
    cell_h = max(max(raw.height, annotated.height) for _, raw, annotated in panels) + 14
    rows = -(-len(panels) // columns)
    sheet = Image.new("RGB", (cell_w * 2 * columns, cell_h * rows), (30, 30, 30))
    draw = ImageDraw.Draw(sheet)
    for i, (title, raw, annotated) in enumerate(panels):
        r, c = divmod(i, columns)
        x, y = cell_w * 2 * c, cell_h * r
        draw.text((x + 2, y + 1), title, fill=(255, 255, 255))
        sheet.paste(raw, (x, y + 14))
        sheet.paste(annotated, (x + cell_w, y + 14))
    sheet.save(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/scenes.png"))
    parser.add_argument("--count", type=int, default=6, help="number of scenes")
    parser.add_argument("--seed", type=int, default=0, help="first scene's seed")
    parser.add_argument("--size", action="append", default=None,
                        help="HxW; repeat to cycle through sizes (default 320x320)")
    parser.add_argument("--columns", type=int, default=2, help="scenes per row")
    parser.add_argument("--zoom", type=int, default=2, help="pixel upscaling for the panels")
    parser.add_argument("--no-matplotlib", action="store_true", help="lay out with PIL only")
    args = parser.parse_args(argv)

    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in (args.size or ["320x320"])]
    scenes = []
    for i in range(args.count):
        h, w = sizes[i % len(sizes)]
        scenes.append(render_scene(random_scene_spec(h, w, args.seed + i, min_people=1)))
    panels = _panels(scenes, args.zoom)
    try:
        if args.no_matplotlib:
            raise ImportError
        _save_with_matplotlib(panels, args.out, args.columns)
    except ImportError:
        _save_with_pil(panels, args.out, args.columns)
    print(f"wrote {args.out} ({len(scenes)} scenes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
