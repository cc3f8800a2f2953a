"""Train TinyRTMOPose (models/pose_rtmo.py) on synthetic scenes, evaluate it, save it.

A pose model with random weights fed noise detects nothing, so parity on it proves
little. This trains the zoo's RTMO-like model for a few minutes on CPU to find the
stick-figure people of deploy_parity.scenes, then measures COCO box AP (person boxes)
and keypoint OKS AP on held-out scenes with pycocotools, and writes

    models/weights/pose_rtmo.pt    the state_dict build_reference() loads
    models/weights/pose_rtmo.json  command line, seed, steps, wall time, metrics

    .venv/bin/python tools/train_pose_rtmo.py            # the committed weights (~8 min)
    .venv/bin/python tools/train_pose_rtmo.py --steps 200 --out-dir /tmp/pose  # a quick try

Everything is seeded: the same command on the same torch build gives bit-identical
weights (one CPU thread, scenes drawn from SeedSequence([seed, ...])).

Training scheme (person-only; blocks and discs are distractors):
  * each person goes to the one stride whose scale suits its box; its positive priors
    are the few on that level nearest the box centre, inside the box and within 2.5
    strides of the centre. Few positives per person, because the model keeps the top
    20 priors without NMS: with up to 3 people, each must fit into those 20;
  * score: BCE over every prior (positives 1, the rest 0), normalised by the number of
    positives; box: L1 on log(ltrb distance / stride); keypoints: L1 on the pixel
    error in units of COCO's OKS scale (2 sigma_k sqrt(area)) for keypoints with v > 0
    (hidden ones still have a true position); keypoint visibility: BCE, target v == 2;
  * Adam with warm-up and cosine decay; every other step replays a recent batch, which
    halves the rendering cost (see models/training/replayed_scenes.py).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deploy_parity.compare.keypoints import COCO_SIGMAS  # noqa: E402
from deploy_parity.scenes.render import LABEL_PERSON  # noqa: E402
from models.training.coco_eval import coco_ap  # noqa: E402
from models.training.loop import (  # noqa: E402
    WarmupCosine,
    command_line,
    save_weights,
    train_steps,
    versions,
    write_record,
)
from models.training.replayed_scenes import ReplayedBatches, held_out_scenes  # noqa: E402
from models.training.replayed_scenes import held_out_description, training_description  # noqa: E402
from models.pose_rtmo import NUM_KEYPOINTS, SEED, STRIDES, TinyRTMOPose  # noqa: E402

DEFAULT_OUT_DIR = REPO / "models" / "weights"
# Held-out evaluation sizes, cycled over the scenes: square and both orientations.
EVAL_SIZES = ((128, 128), (96, 160), (160, 96), (128, 192), (192, 128), (64, 128), (160, 160))
# A person goes to stride 8 below this larger box side, 16 below the next, else 32.
LEVEL_UPPER_SIDE = (56.0, 120.0)
POSITIVES_PER_PERSON = 5
CENTRE_RADIUS_STRIDES = 2.5
# Log-distance floor: a fallback prior outside a tiny box must not ask for log(0).
MIN_DISTANCE_PX = 1.0
# Evaluation NMS (the model itself keeps top-k priors without NMS): several nearby
# priors report one person, which COCO AP would count as false positives.
EVAL_NMS_IOU = 0.5
OKS_SIGMAS = torch.as_tensor(COCO_SIGMAS, dtype=torch.float32)
# Occluded people can show a handful of pixels; their OKS scale is floored at this area.
MIN_OKS_AREA = 64.0
# The OKS-scaled keypoint error runs ~5x the other terms; this brings it level.
KEYPOINT_LOSS_WEIGHT = 0.25


def priors_and_strides(height: int, width: int):
    """Eager priors for an image size, in the model's flattening order, with their level."""
    priors, strides, levels = [], [], []
    for level, s in enumerate(STRIDES):
        rows, cols = math.ceil(height / s), math.ceil(width / s)
        priors.append(TinyRTMOPose.priors_for_grid(rows, cols, s))
        strides.append(torch.full((rows * cols,), float(s)))
        levels.append(torch.full((rows * cols,), level, dtype=torch.long))
    return torch.cat(priors), torch.cat(strides), torch.cat(levels)


def person_level(box: np.ndarray) -> int:
    side = max(box[2] - box[0], box[3] - box[1])
    return int(sum(side >= bound for bound in LEVEL_UPPER_SIDE))


def assign_targets(truth, priors: torch.Tensor, strides: torch.Tensor, levels: torch.Tensor):
    """Per prior: the index of the person it regresses (-1 = negative)."""
    owner = torch.full((len(priors),), -1, dtype=torch.long)
    owner_distance = torch.full((len(priors),), math.inf)
    for r in np.flatnonzero(truth.labels == LABEL_PERSON).tolist():
        box = torch.as_tensor(truth.boxes[r])
        centre = (box[:2] + box[2:]) / 2
        on_level = levels == person_level(truth.boxes[r])
        distance = (priors - centre).norm(dim=1)
        inside = (priors[:, 0] > box[0]) & (priors[:, 0] < box[2]) & (priors[:, 1] > box[1]) & (priors[:, 1] < box[3])
        candidates = on_level & inside & (distance <= CENTRE_RADIUS_STRIDES * strides)
        if not candidates.any():
            # A box thinner than the prior spacing: its nearest prior on the level.
            candidates = on_level & (distance == distance[on_level].min())
        index = torch.nonzero(candidates).flatten()
        index = index[distance[index].argsort(stable=True)[:POSITIVES_PER_PERSON]]
        # A prior two people claim goes to the one whose centre is nearer.
        closer = distance[index] < owner_distance[index]
        owner[index[closer]] = r
        owner_distance[index[closer]] = distance[index[closer]]
    return owner


class SceneBatch(NamedTuple):
    """A rendered training batch: uint8 images and the ground truth the loss needs."""

    images: torch.Tensor  # (B, 3, H, W) uint8
    targets: list  # per image: GroundTruth


class GroundTruth(NamedTuple):
    boxes: np.ndarray  # (R, 4) xyxy
    labels: np.ndarray  # (R,)
    keypoints: np.ndarray  # (R, 17, 3) x y v
    areas: np.ndarray  # (R,) visible pixels, the area COCO's OKS is scaled by


def scene_batch(scenes: list, height: int, width: int) -> SceneBatch:
    """Rendered scenes as the loss reads them."""
    images = torch.from_numpy(np.stack([s.image.transpose(2, 0, 1) for s in scenes]))
    return SceneBatch(images, [GroundTruth(s.boxes, s.labels, s.keypoints, s.areas) for s in scenes])


def pose_loss(model: TinyRTMOPose, images: torch.Tensor, targets) -> tuple[torch.Tensor, dict]:
    k = NUM_KEYPOINTS
    flat = model.flatten_maps(model.head_maps(images))  # (B, N, C)
    priors, strides, levels = priors_and_strides(images.shape[2], images.shape[3])
    assert flat.shape[1] == len(priors), "training priors disagree with the model's feature maps"

    score_target = torch.zeros(flat.shape[:2])
    pos_flat, pos_priors, pos_strides, box_targets, kpt_targets, area_targets = [], [], [], [], [], []
    for b, truth in enumerate(targets):
        owner = assign_targets(truth, priors, strides, levels)
        positive = owner >= 0
        score_target[b, positive] = 1.0
        pos_flat.append(flat[b, positive])
        pos_priors.append(priors[positive])
        pos_strides.append(strides[positive])
        box_targets.append(torch.as_tensor(truth.boxes)[owner[positive]])
        kpt_targets.append(torch.as_tensor(truth.keypoints)[owner[positive]])
        area_targets.append(torch.as_tensor(truth.areas)[owner[positive]])

    num_pos = max(int(score_target.sum()), 1)
    score_loss = F.binary_cross_entropy_with_logits(flat[..., 0], score_target, reduction="sum") / num_pos
    parts = {"score": score_loss}
    pos = torch.cat(pos_flat)
    if len(pos):
        centre, stride = torch.cat(pos_priors), torch.cat(pos_strides)[:, None]
        box, kpts, area = torch.cat(box_targets), torch.cat(kpt_targets), torch.cat(area_targets)
        ltrb = torch.cat([centre - box[:, :2], box[:, 2:] - centre], dim=1).clamp(min=MIN_DISTANCE_PX)
        parts["box"] = F.l1_loss(pos[:, 1:5], torch.log(ltrb / stride))
        predicted_xy = centre[:, None, :] + pos[:, 5 : 5 + 2 * k].reshape(-1, k, 2) * stride[:, :, None]
        # Pixel error in the units of COCO's OKS (2 sigma_k sqrt(area)): a pixel on the
        # nose costs four times a pixel on the hip, as it does in keypoint AP.
        oks_scale = 2 * OKS_SIGMAS[None, :] * area.clamp(min=MIN_OKS_AREA).sqrt()[:, None]
        error = (predicted_xy - kpts[..., :2]).abs().sum(-1) / oks_scale
        labelled = kpts[..., 2] > 0
        parts["keypoints"] = error[labelled].mean()
        parts["visibility"] = F.binary_cross_entropy_with_logits(pos[:, 5 + 2 * k :], (kpts[..., 2] == 2).float())
    total = (parts["score"] + parts.get("box", 0.0) + KEYPOINT_LOSS_WEIGHT * parts.get("keypoints", 0.0)
             + 0.5 * parts.get("visibility", 0.0))
    return total, {name: float(v.detach()) for name, v in parts.items()}


@torch.no_grad()
def predict(model: TinyRTMOPose, scene, nms_iou: float = EVAL_NMS_IOU) -> dict:
    """One scene through the eager model, NMS over its top-k, as coco_ap predictions."""
    from torchvision.ops import nms

    image = torch.from_numpy(scene.image.transpose(2, 0, 1)[None].copy())
    dets, keypoints = model(image)
    boxes, scores = dets[0, :, :4], dets[0, :, 4]
    keep = nms(boxes, scores, nms_iou)
    return {
        "boxes": boxes[keep].numpy(),
        "scores": scores[keep].numpy(),
        "labels": np.full(len(keep), LABEL_PERSON),
        "keypoints": keypoints[0, keep].numpy(),
    }


def evaluate(model: TinyRTMOPose, scenes) -> dict:
    model.eval()
    predictions = [predict(model, scene) for scene in scenes]
    box = coco_ap(scenes, predictions, "bbox", category_ids=[LABEL_PERSON])
    keypoints = coco_ap(scenes, predictions, "keypoints")
    return {"box_AP": box["AP"], "box_AP50": box["AP50"], "box_AP75": box["AP75"],
            "keypoint_AP": keypoints["AP"], "keypoint_AP50": keypoints["AP50"], "keypoint_AP75": keypoints["AP75"]}


def train(args):
    """The trained model (eval mode) and its TrainingRun."""
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = TinyRTMOPose()
    with torch.no_grad():
        for head in model.heads:
            # Start every prior at a 1% person probability: the loss is then not
            # swamped at step 0 by hundreds of background priors at 50%.
            head.bias[0].fill_(-math.log(99.0))
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = WarmupCosine(args.lr, args.steps, warmup=min(100, args.steps // 10), share_first=True)
    batches = ReplayedBatches(rng, args.seed, args.batch, scene_batch)

    def batch_loss(step: int):
        batch = batches.next(step)
        return pose_loss(model, batch.images.float() / 255.0, batch.targets)

    run = train_steps(model, optimiser, batch_loss, steps=args.steps, learning_rate=schedule, log_every=args.log_every,
                      average_weight=0.02)
    return model, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--steps", type=int, default=3600)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-scenes", type=int, default=140)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    if args.eval_scenes < 100:
        parser.error("--eval-scenes: the held-out set must have at least 100 scenes")

    wall_start = time.perf_counter()
    model, run = train(args)
    eval_start = time.perf_counter()
    scenes = held_out_scenes(args.seed, args.eval_scenes, EVAL_SIZES)
    metrics = evaluate(model, scenes)
    eval_seconds = time.perf_counter() - eval_start
    print("held-out: " + ", ".join(f"{n} {v:.3f}" for n, v in metrics.items()), flush=True)

    weights = save_weights(model.state_dict(), args.out_dir / "pose_rtmo.pt")
    record = {
        "command": command_line("tools/train_pose_rtmo.py", argv),
        "seed": args.seed,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "schedule": "Adam, linear warm-up then cosine decay to 0",
        **training_description(),
        "assignment": {"level_upper_side_px": list(LEVEL_UPPER_SIDE), "positives_per_person": POSITIVES_PER_PERSON,
                       "centre_radius_strides": CENTRE_RADIUS_STRIDES},
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_bytes": weights.stat().st_size,
        **run.summary(eval_seconds=eval_seconds, wall_start=wall_start),
        "held_out": {
            **held_out_description(args.eval_scenes, EVAL_SIZES),
            "predictions": f"eager model, top-{model.topk} priors, then NMS at IoU {EVAL_NMS_IOU}",
        },
        "metrics": {n: round(v, 4) for n, v in metrics.items()},
        "loss_history": run.history,
        **versions(),
    }
    write_record(weights, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
