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
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from deploy_parity.scenes.render import LABEL_PERSON  # noqa: E402
from models.training.coco_eval import coco_ap  # noqa: E402
from models.training.detectors import held_out_scenes, image_tensor, train_detector, training_record  # noqa: E402
from models.training.loop import save_weights, write_record  # noqa: E402

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


def predictions(reference, scenes) -> list:
    """The reference model's detections per scene, as coco_eval expects them."""
    out = []
    with torch.inference_mode():
        for scene in scenes:
            boxes, scores, labels, *rest = reference(image_tensor(scene)[None])
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
    """The trained detector (eval mode), its models.* module and the TrainingRun."""
    module = importlib.import_module(task.module)
    detector = module.build_detector()
    run = train_detector(detector, lambda scene: target_for(scene, task), steps=steps, batch=batch, lr=lr,
                         warmup=warmup, seed=seed, log_every=log_every)
    return module, detector, run


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
    module, detector, run = train(task, args.steps, args.batch, args.lr, args.warmup, args.seed)
    out = save_weights(detector.state_dict(), args.out or module.WEIGHTS)

    # Evaluate the trained detector through the case's own reference wrapper.
    reference = module.reference_for(detector).eval()
    eval_start = time.perf_counter()
    metrics = evaluate(task, reference, held_out_scenes(args.held_out))
    eval_seconds = time.perf_counter() - eval_start
    record = training_record(task.name, "tools/train_rcnn.py", argv, args, run, detector, wall_start=wall_start,
                             eval_seconds=eval_seconds, metrics=metrics, weights=out)
    print(json.dumps({"metrics": metrics, "wall_seconds": record["wall_seconds"]}, indent=1))
    write_record(out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
