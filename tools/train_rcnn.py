"""Train the zoo's tiny Keypoint R-CNN or Mask R-CNN on synthetic scenes, on one CPU thread.

    .venv/bin/python tools/train_rcnn.py keypoint-rcnn
    .venv/bin/python tools/train_rcnn.py mask-rcnn --steps 1200 --seed 0

Writes models/weights/<module>.pt (the torchvision detector's state dict) and
models/weights/<module>.json: the command, seed, steps, wall time and the held-out
COCO metrics (box AP plus keypoint AP or mask AP, by pycocotools).

Deterministic: every training image is rendered from a seed derived from (seed, step,
image), the model is seeded by its module, and torch runs on one thread, so the same
command gives the same weights (two runs of the keypoint command gave byte-identical
files). The held-out scenes come from a seed stream that training never draws from.
The default 1200 steps take 8.5-9.5 minutes on one thread of a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from deploy_parity.scenes.render import LABEL_PERSON, random_scene_spec, render_scene  # noqa: E402
from models.training.coco_eval import coco_ap  # noqa: E402

# Held-out scenes are drawn from this stream only; training seeds are (seed, step, image).
HELD_OUT_STREAM = 7_777_001
TRAIN_STREAM = 1_000_003
MIN_SIDE, MAX_SIDE, MAX_ASPECT = 96, 224, 2.0  # the sizes the parity suites feed
# Share of training images with no people (and, for Mask R-CNN, nothing at all): the
# models must learn to say "nothing here", the suites' zero-detection control.
EMPTY_SHARE = 0.08
MASK_THRESHOLD = 0.5  # soft mask -> binary mask for mask AP


@dataclass(frozen=True)
class Task:
    name: str  # the model case name
    module: str  # the models.* module with build_detector / build_reference / WEIGHTS
    iou_types: tuple  # what coco_ap evaluates
    people_only: bool  # Keypoint R-CNN learns people only; blocks and discs are background


TASKS = {
    "keypoint-rcnn": Task("keypoint-rcnn", "models.keypoint_rcnn", ("bbox", "keypoints"), people_only=True),
    "mask-rcnn": Task("mask-rcnn", "models.mask_rcnn", ("bbox", "segm"), people_only=False),
}

DEFAULTS = {"steps": 1200, "batch": 4, "lr": 2e-3, "warmup": 100, "seed": 0}


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def draw_size(rng: np.random.Generator) -> tuple:
    """(height, width) in the suites' size space, rectangular up to MAX_ASPECT."""
    height = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    w_lo = max(MIN_SIDE, math.ceil(height / MAX_ASPECT))
    w_hi = min(MAX_SIDE, math.floor(height * MAX_ASPECT))
    return height, int(rng.integers(w_lo, w_hi + 1))


def scene_for(rng: np.random.Generator, height: int, width: int, empty_share: float):
    empty = rng.random() < empty_share
    people, objects = (0, 0) if empty else (3, 2)
    spec = random_scene_spec(height, width, int(rng.integers(2**31 - 1)), min_people=min(1, people),
                             max_people=people, max_objects=objects)
    return render_scene(spec)


def held_out_scenes(count: int, stream: int = HELD_OUT_STREAM) -> list:
    """Scenes the models never trained on, with 1..3 people and 0..2 blocks/discs each."""
    scenes = []
    for i in range(count):
        rng = _rng(stream, i)
        height, width = draw_size(rng)
        scenes.append(scene_for(rng, height, width, empty_share=0.0))
    return scenes


def target_for(scene, task: Task) -> dict:
    """torchvision's detection target for one scene."""
    keep = scene.labels == LABEL_PERSON if task.people_only else np.ones(len(scene), dtype=bool)
    target = {
        "boxes": torch.from_numpy(scene.boxes[keep]).reshape(-1, 4),
        "labels": torch.from_numpy(scene.labels[keep]),
    }
    if task.people_only:
        target["keypoints"] = torch.from_numpy(scene.keypoints[keep]).reshape(-1, 17, 3)
    else:
        target["masks"] = torch.from_numpy(scene.masks[keep].astype(np.uint8))
    return target


def training_batch(task: Task, seed: int, step: int, batch: int):
    """One batch at one size (no padding waste): images (float [0, 1]) and targets."""
    height, width = draw_size(_rng(TRAIN_STREAM, seed, step))
    images, targets = [], []
    for i in range(batch):
        scene = scene_for(_rng(TRAIN_STREAM, seed, step, i), height, width, EMPTY_SHARE)
        images.append(torch.from_numpy(scene.image).permute(2, 0, 1).float() / 255.0)
        targets.append(target_for(scene, task))
    return images, targets


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def predictions(reference, scenes) -> list:
    """The reference model's detections per scene, as coco_eval expects them."""
    out = []
    with torch.inference_mode():
        for scene in scenes:
            image = torch.from_numpy(scene.image).permute(2, 0, 1)[None].float() / 255.0
            boxes, scores, labels, *rest = reference(image)
            pred = {"boxes": boxes.numpy(), "scores": scores.numpy(), "labels": labels.numpy()}
            if rest and rest[0].dim() == 3 and rest[0].shape[-1] == 3:  # keypoints (R, 17, 3)
                pred["keypoints"] = rest[0].numpy()
            elif rest:  # pasted soft masks (R, H, W)
                pred["masks"] = rest[0].numpy() >= MASK_THRESHOLD
            out.append(pred)
    return out


def evaluate(task: Task, reference, scenes) -> dict:
    """COCO AP of the reference model on `scenes`, per iou type."""
    preds = predictions(reference, scenes)
    # A people-only model is scored on people: blocks and discs are background to it.
    categories = [LABEL_PERSON] if task.people_only else None
    return {iou_type: coco_ap(scenes, preds, iou_type, category_ids=categories) for iou_type in task.iou_types}


def train(task: Task, steps: int, batch: int, lr: float, warmup: int, seed: int, log_every: int = 50):
    module = importlib.import_module(task.module)
    detector = module.build_detector()
    torch.manual_seed(seed)
    detector.train()
    params = [p for p in detector.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    start = time.perf_counter()
    running = None
    for step in range(steps):
        images, targets = training_batch(task, seed, step, batch)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr, warmup)
        losses = detector(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # A few degenerate early batches (no positives) give large RPN gradients.
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        values = {k: float(v.detach()) for k, v in losses.items()}
        running = values if running is None else {k: 0.95 * running[k] + 0.05 * v for k, v in values.items()}
        if (step + 1) % log_every == 0 or step == steps - 1:
            parts = " ".join(f"{k.replace('loss_', '')} {v:.3f}" for k, v in running.items())
            elapsed = time.perf_counter() - start
            print(f"step {step + 1}/{steps} {elapsed:.0f}s lr {optimizer.param_groups[0]['lr']:.2e} {parts}",
                  flush=True)
    return module, detector.eval(), time.perf_counter() - start, running


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(TASKS))
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--warmup", type=int, default=DEFAULTS["warmup"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--held-out", type=int, default=48, help="held-out scenes for the COCO metrics")
    parser.add_argument("--out", type=Path, default=None, help="weights path (default: the model module's WEIGHTS)")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # deterministic, and fair to the other jobs on a shared CPU
    task = TASKS[args.model]
    wall_start = time.perf_counter()
    module, detector, train_seconds, final_losses = train(task, args.steps, args.batch, args.lr, args.warmup,
                                                          args.seed)
    out = args.out or module.WEIGHTS
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(detector.state_dict(), out)

    # Evaluate the trained detector through the case's own reference wrapper.
    reference = module.reference_for(detector).eval()
    eval_start = time.perf_counter()
    metrics = evaluate(task, reference, held_out_scenes(args.held_out))
    eval_seconds = time.perf_counter() - eval_start
    record = {
        "model": task.name,
        "command": shlex.join([".venv/bin/python", "tools/train_rcnn.py", *(argv or sys.argv[1:])]),
        "seed": args.seed,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "warmup": args.warmup,
        "threads": 1,
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "wall_seconds": round(time.perf_counter() - wall_start, 1),
        "final_losses": {k: round(v, 4) for k, v in (final_losses or {}).items()},
        "held_out": {"scenes": args.held_out, "stream": HELD_OUT_STREAM, "people": "1..3", "objects": "0..2",
                     "sizes": f"{MIN_SIDE}..{MAX_SIDE}, aspect <= {MAX_ASPECT}"},
        "metrics": metrics,
        "parameters": sum(p.numel() for p in detector.parameters()),
        "weights_bytes": out.stat().st_size,
        "versions": {"torch": torch.__version__, "torchvision": importlib.import_module("torchvision").__version__},
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({"metrics": metrics, "wall_seconds": record["wall_seconds"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
