"""Train models/detr_tiny.py on synthetic scenes, evaluate box AP, write the weights and a record.

    .venv/bin/python tools/train_detr_tiny.py                # the committed weights
    .venv/bin/python tools/train_detr_tiny.py --steps 200 --out /tmp/try.pt   # a quick look

DETR set prediction: each image's ground truth is assigned one-to-one to queries by the
Hungarian algorithm (scipy's linear_sum_assignment) on a focal class cost plus L1 and
GIoU box costs; the loss is sigmoid focal loss over every query x class, plus L1 and
GIoU on the matched boxes, after every decoder layer (auxiliary losses).

Deterministic: one CPU thread, torch seeded, every training image rendered from a seed
derived from (seed, step, index), and a fixed step count (never a time budget), so the
same command gives the same weights. The held-out set comes from a different seed
stream and uses the parity suites' scene distribution (at least one person).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import generalized_box_iou, sigmoid_focal_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy_parity.scenes import random_scene_spec, render_scene  # noqa: E402
from models.training.coco_eval import coco_ap  # noqa: E402
from models.training.loop import (  # noqa: E402
    WarmupCosine,
    command_line,
    derived_seed,
    save_weights,
    train_steps,
    write_record,
)
from models.detr_tiny import NUM_CLASSES, SEED, WEIGHTS, TinyDETR, box_cxcywh_to_xyxy  # noqa: E402

# Loss and matching-cost weights (Deformable-DETR's): class, L1, GIoU.
CLASS_WEIGHT, L1_WEIGHT, GIOU_WEIGHT = 2.0, 5.0, 2.0
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
# Training sizes: every side in [96, 160] (any integer), drawn per batch, so the model sees
# rectangular and odd sizes and its normalised positions generalise across them.
TRAIN_MIN_SIDE, TRAIN_MAX_SIDE = 96, 160
EVAL_SIZES = ((128, 128), (96, 160))  # (height, width)
EVAL_STREAM = 7  # seed stream of the held-out scenes; training uses stream 0


def render_training_batch(seed: int, step: int, batch: int):
    """(B, 3, H, W) float images in [0, 1] and targets: labels 0..C-1, boxes cxcywh normalised."""
    rng = np.random.default_rng(derived_seed(seed, 0, step))
    height, width = (int(v) for v in rng.integers(TRAIN_MIN_SIDE, TRAIN_MAX_SIDE + 1, size=2))
    images, targets = [], []
    for index in range(batch):
        scene = render_scene(random_scene_spec(height, width, derived_seed(seed, 0, step, index), min_people=0))
        images.append(torch.from_numpy(scene.image).permute(2, 0, 1).float() / 255.0)
        targets.append(scene_target(scene))
    return torch.stack(images), targets


def scene_target(scene) -> dict:
    height, width = scene.image.shape[:2]
    xyxy = torch.from_numpy(scene.boxes).float() / torch.tensor([width, height, width, height], dtype=torch.float32)
    cxcywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], dim=1)
    return {"labels": torch.from_numpy(scene.labels) - 1, "boxes": cxcywh}


@torch.no_grad()
def hungarian_match(class_logits: torch.Tensor, boxes: torch.Tensor, targets: list) -> list:
    """Per image, (query indices, target indices) of the minimum-cost one-to-one assignment."""
    matches = []
    for logits, pred, target in zip(class_logits, boxes, targets):
        if len(target["labels"]) == 0:
            matches.append((torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))
            continue
        prob = logits.sigmoid()[:, target["labels"]]  # (Q, T)
        # Focal cost: how much cheaper "this query is that class" is than "it is not".
        positive = FOCAL_ALPHA * (1 - prob) ** FOCAL_GAMMA * -(prob + 1e-8).log()
        negative = (1 - FOCAL_ALPHA) * prob**FOCAL_GAMMA * -(1 - prob + 1e-8).log()
        cost = (
            CLASS_WEIGHT * (positive - negative)
            + L1_WEIGHT * torch.cdist(pred, target["boxes"], p=1)
            - GIOU_WEIGHT * generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(target["boxes"]))
        )
        rows, cols = linear_sum_assignment(cost.numpy())
        matches.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
    return matches


def set_loss(class_logits: torch.Tensor, boxes: torch.Tensor, targets: list) -> dict:
    """Focal class loss over all queries x classes, L1 and GIoU on matched boxes; per box."""
    matches = hungarian_match(class_logits, boxes, targets)
    num_boxes = max(1.0, float(sum(len(t["labels"]) for t in targets)))
    class_target = torch.zeros_like(class_logits)
    matched_pred, matched_true = [], []
    for image, ((rows, cols), target) in enumerate(zip(matches, targets)):
        class_target[image, rows, target["labels"][cols]] = 1.0
        matched_pred.append(boxes[image, rows])
        matched_true.append(target["boxes"][cols])
    pred, true = torch.cat(matched_pred), torch.cat(matched_true)
    focal = sigmoid_focal_loss(class_logits, class_target, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="sum")
    l1 = (pred - true).abs().sum()
    giou = (1 - torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(true)))).sum()
    return {"class": focal / num_boxes, "l1": l1 / num_boxes, "giou": giou / num_boxes}


def total_loss(predictions: list, targets: list) -> tuple:
    parts = {"class": 0.0, "l1": 0.0, "giou": 0.0}
    for class_logits, boxes in predictions:  # every decoder layer: auxiliary losses
        for key, value in set_loss(class_logits, boxes, targets).items():
            parts[key] = parts[key] + value
    loss = CLASS_WEIGHT * parts["class"] + L1_WEIGHT * parts["l1"] + GIOU_WEIGHT * parts["giou"]
    return loss, {key: float(torch.as_tensor(value).detach()) for key, value in parts.items()}


def held_out_scenes(seed: int, count: int, height: int, width: int) -> list:
    return [render_scene(random_scene_spec(height, width, derived_seed(seed, EVAL_STREAM, height, width, i),
                                           min_people=1))
            for i in range(count)]


@torch.no_grad()
def predict(model: TinyDETR, scenes: list, batch: int = 16) -> list:
    """The deploy outputs (all top-K detections) per scene, as coco_ap's prediction dicts."""
    model.eval()
    predictions = []
    for start in range(0, len(scenes), batch):
        chunk = scenes[start : start + batch]
        height, width = chunk[0].image.shape[:2]
        images = torch.from_numpy(np.stack([s.image.transpose(2, 0, 1) for s in chunk])).float() / 255.0
        sizes = torch.tensor([[width, height]] * len(chunk), dtype=torch.int64)
        labels, boxes, scores = model(images, sizes)
        predictions += [{"labels": l.numpy(), "boxes": b.numpy(), "scores": s.numpy()}
                        for l, b, s in zip(labels, boxes, scores)]
    return predictions


def evaluate(model: TinyDETR, seed: int, count: int) -> dict:
    results = {}
    for height, width in EVAL_SIZES:
        scenes = held_out_scenes(seed, count, height, width)
        predictions = predict(model, scenes)
        metrics = coco_ap(scenes, predictions, "bbox")
        for label, name in ((1, "person"), (2, "block"), (3, "disc")):
            metrics[f"AP50_{name}"] = coco_ap(scenes, predictions, "bbox", category_ids=[label])["AP50"]
        results[f"{height}x{width}"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
    return results


def train(args):
    """The trained model (eval mode) and its TrainingRun; the parts it reports are the
    weighted total ("loss") and the class, L1 and GIoU losses summed over the layers."""
    torch.set_num_threads(1)  # shared machine; also makes the run reproducible
    torch.manual_seed(args.seed)
    model = TinyDETR()
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)

    def batch_loss(step: int):
        images, targets = render_training_batch(args.seed, step, args.batch)
        loss, parts = total_loss(model.per_layer_predictions(images), targets)
        return loss, {"loss": loss.item(), **parts}

    schedule = WarmupCosine(args.lr, args.steps, args.warmup, floor=0.05)  # cosine decay to 5% of the peak
    run = train_steps(model, optimiser, batch_loss, steps=args.steps, learning_rate=schedule, log_every=args.log_every,
                      clip_norm=1.0)
    return model, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--eval-scenes", type=int, default=120, help="held-out scenes per evaluation size")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="weights file; the record goes next to it (.json)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    model, run = train(args)
    train_seconds = time.perf_counter() - start
    save_weights(model.state_dict(), args.out)
    metrics = evaluate(model, args.seed, args.eval_scenes)
    record = {
        "command": command_line("tools/train_detr_tiny.py", argv),
        "seed": args.seed,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "train_sizes": f"sides in [{TRAIN_MIN_SIDE}, {TRAIN_MAX_SIDE}], drawn per batch",
        "train_wall_seconds": round(train_seconds, 1),
        "threads": torch.get_num_threads(),
        "final_loss": run.final_losses["loss"],
        "held_out": {
            "scenes_per_size": args.eval_scenes,
            "distribution": "random_scene_spec(min_people=1), seed stream disjoint from training",
            "metric": "pycocotools bbox AP over all top-K detections (models.training.coco_eval.coco_ap)",
            "results": metrics,
        },
        "versions": {"torch": torch.__version__},
        "weights_bytes": args.out.stat().st_size,
    }
    print(json.dumps(record["held_out"]["results"], indent=1))
    print(f"trained {args.steps} steps in {train_seconds:.0f}s", flush=True)
    write_record(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
