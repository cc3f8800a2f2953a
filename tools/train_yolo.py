"""Train the zoo's tiny Ultralytics YOLOs (models/yolo_common.py) on synthetic scenes.

A freshly built YOLO scores every anchor sigmoid(bias) = 0.0123, below any confidence
threshold: parity on it compares nothing. This trains each model for a few minutes on
CPU with Ultralytics' own losses (v8PoseLoss / v8SegmentationLoss, task-aligned
assignment, DFL) on batches rendered by deploy_parity/scenes, no Ultralytics dataset or
trainer, then measures it on held-out scenes with pycocotools, and writes

    models/weights/yolo_pose.pt / yolo_seg.pt    fp16 state_dict (build_reference loads it)
    models/weights/yolo_pose.json / yolo_seg.json command, seed, steps, wall time, metrics

    .venv/bin/python tools/train_yolo.py --task pose      # the committed weights
    .venv/bin/python tools/train_yolo.py --task segment
    .venv/bin/python tools/train_yolo.py --task pose --steps 100 --out-dir /tmp/y   # a quick try

Seeded throughout (one CPU thread by default; scenes from SeedSequence([seed, 0, n, i])),
so the same command on the same torch build gives the same weights.

Targets, in Ultralytics' batch format (normalised xywh boxes, batch_idx, cls):
  pose: people only (blocks and discs are distractors), class 0; 17 keypoints normalised
      to the image, visibility as rendered (2 visible, 1 hidden) and 0 outside the image
      (as Ultralytics' datasets mark them);
  segment: person / block / disc as classes 0 / 1 / 2; masks per instance at the
      prototype resolution (1/4), soft: the fraction of each 4x4 block the instance's
      visible pixels cover (overlap_mask=False), so 3-px limbs do not vanish.
AdamW (Ultralytics' choice for short runs) with linear warm-up and cosine decay,
gradients clipped at norm 10 as Ultralytics' trainer does; every other step replays a
recent batch, halving the rendering cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# First: models.yolo_common sets the YOLO_* environment before Ultralytics is imported.
from models.yolo_common import POSE, SEG, YoloSpec, build_untrained, load_trained, save_weights  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from deploy_parity.adapters.ultralytics import UltralyticsYOLO  # noqa: E402
from deploy_parity.compare.boxes import box_iou  # noqa: E402
from deploy_parity.scenes.render import LABEL_PERSON  # noqa: E402
from models.training.coco_eval import coco_ap  # noqa: E402
from models.training.loop import WarmupCosine, command_line, train_steps, versions, write_record  # noqa: E402
from models.training.replayed_scenes import ReplayedBatches, held_out_scenes  # noqa: E402
from models.training.replayed_scenes import held_out_description, training_description  # noqa: E402

SPECS = {"pose": POSE, "segment": SEG}
SEED = 20261207
DEFAULT_OUT_DIR = REPO / "models" / "weights"
EVAL_SIZES = ((128, 128), (96, 160), (160, 96), (128, 192), (192, 128), (64, 128), (160, 160), (256, 224))
MASK_RATIO = 4  # prototype resolution: 1/4 of the input
# A held-out person counts as found by a detection of score > conf overlapping it this much.
FOUND_IOU = 0.5
CASE_CONF = 0.25  # Ultralytics' predict default, the zoo cases' score threshold
EVAL_CONF = 0.001  # Ultralytics' val default: AP needs the low-score tail


def ultralytics_batch(scenes, height: int, width: int, task: str) -> tuple[torch.Tensor, dict]:
    """(images float (B, 3, H, W) in [0, 1], the batch dict Ultralytics' losses read)."""
    images = torch.from_numpy(np.stack([s.image.transpose(2, 0, 1) for s in scenes])).float() / 255.0
    batch_idx, cls, boxes, keypoints, masks = [], [], [], [], []
    for i, scene in enumerate(scenes):
        for r in range(len(scene.labels)):
            if task == "pose" and scene.labels[r] != LABEL_PERSON:
                continue
            x1, y1, x2, y2 = (float(v) for v in scene.boxes[r])
            batch_idx.append(i)
            cls.append(0 if task == "pose" else int(scene.labels[r]) - 1)
            boxes.append([(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height])
            if task == "pose":
                kpt = scene.keypoints[r].astype(np.float32).copy()
                outside = (kpt[:, 0] < 0) | (kpt[:, 0] >= width) | (kpt[:, 1] < 0) | (kpt[:, 1] >= height)
                kpt[outside, 2] = 0.0
                kpt[:, 0] /= width
                kpt[:, 1] /= height
                keypoints.append(kpt)
            else:
                block = scene.masks[r].reshape(height // MASK_RATIO, MASK_RATIO, width // MASK_RATIO, MASK_RATIO)
                masks.append(block.mean(axis=(1, 3), dtype=np.float32))
    batch = {
        "batch_idx": torch.tensor(batch_idx, dtype=torch.float32),
        "cls": torch.tensor(cls, dtype=torch.float32).view(-1, 1),
        "bboxes": torch.tensor(np.asarray(boxes, dtype=np.float32)).view(-1, 4),
    }
    if task == "pose":
        batch["keypoints"] = torch.tensor(np.asarray(keypoints, dtype=np.float32)).view(-1, 17, 3)
    else:
        batch["masks"] = torch.tensor(np.asarray(masks, dtype=np.float32)).view(-1, height // MASK_RATIO,
                                                                                 width // MASK_RATIO)
    return images, batch


def criterion_for(model, task: str):
    from ultralytics.cfg import get_cfg
    from ultralytics.utils.loss import v8PoseLoss, v8SegmentationLoss

    model.args = get_cfg()  # Ultralytics' default gains: box 7.5, cls 0.5, dfl 1.5, pose 12, kobj 1
    model.args.overlap_mask = False  # one (soft) mask per instance
    return v8PoseLoss(model) if task == "pose" else v8SegmentationLoss(model)


def parameter_groups(model, weight_decay: float):
    """Ultralytics' grouping: decay on weights of convs and linears, none on BN or biases."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if name == "bias" or isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                no_decay.append(param)
            else:
                decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(spec: YoloSpec, args):
    """The trained model (eval mode) and its TrainingRun."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = build_untrained(spec)
    criterion = criterion_for(model, spec.task)
    optimiser = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.999))
    schedule = WarmupCosine(args.lr, args.steps, warmup=min(100, args.steps // 10), floor=0.02, share_first=True)
    batches = ReplayedBatches(rng, args.seed, args.batch,
                              lambda scenes, height, width: ultralytics_batch(scenes, height, width, spec.task))

    def batch_loss(step: int):
        images, batch = batches.next(step)
        loss, items = criterion(model(images), batch)
        # sem_loss, Ultralytics' semantic-segmentation term, stays zero: the zoo's model has no semantic head.
        return loss.sum(), {name: float(value) for name, value in items.items() if name != "sem_loss"}

    # Gradients clipped at norm 10, as Ultralytics' trainer does.
    run = train_steps(model, optimiser, batch_loss, steps=args.steps, learning_rate=schedule, log_every=args.log_every,
                      clip_norm=10.0, average_weight=0.02)
    return model, run


@torch.no_grad()
def predict(model, spec: YoloSpec, scene, conf: float) -> dict:
    """One scene through the eager model, read by the harness's own adapter (decode + NMS)."""
    adapter = UltralyticsYOLO(spec.task, num_classes=spec.num_classes, score_threshold=conf)
    image = torch.from_numpy(scene.image.transpose(2, 0, 1)[None].copy()).float() / 255.0
    outputs = {k: v.numpy() for k, v in adapter.named_outputs(model(image)).items()}
    height, width = scene.image.shape[:2]
    inst = adapter.to_instances(outputs, 0, (height, width))
    prediction = {"boxes": inst.boxes, "scores": inst.scores, "labels": inst.labels + 1}  # scene labels are 1-based
    if inst.keypoints is not None:
        prediction["keypoints"] = inst.keypoints
    if inst.masks is not None:
        soft = torch.from_numpy(inst.masks[None]).float()
        full = F.interpolate(soft, size=(height, width), mode="bilinear", align_corners=False)[0] if len(inst) else \
            torch.zeros((0, height, width))
        prediction["masks"] = (full > 0.5).numpy()
    return prediction


def found_fraction(scenes, predictions, label: int) -> dict:
    """Of the held-out instances of `label`, the fraction some detection of the same label
    above CASE_CONF overlaps by FOUND_IOU, and their best scores' median."""
    found, total, best = 0, 0, []
    for scene, pred in zip(scenes, predictions):
        truth = scene.boxes[scene.labels == label]
        total += len(truth)
        keep = (pred["scores"] > CASE_CONF) & (pred["labels"] == label)
        if not len(truth) or not keep.any():
            continue
        iou = box_iou(truth, pred["boxes"][keep])
        hits = iou.max(axis=1) >= FOUND_IOU
        found += int(hits.sum())
        scores = pred["scores"][keep]
        best += [float(scores[iou[r] >= FOUND_IOU].max()) for r in np.flatnonzero(hits)]
    return {"found": round(found / max(total, 1), 4), "instances": total,
            "median_score_found": round(float(np.median(best)), 4) if best else 0.0}


def evaluate(model, spec: YoloSpec, scenes) -> dict:
    predictions = [predict(model, spec, scene, EVAL_CONF) for scene in scenes]
    metrics = {}
    box = coco_ap(scenes, predictions, "bbox", category_ids=[LABEL_PERSON] if spec.task == "pose" else None)
    metrics.update(box_AP=box["AP"], box_AP50=box["AP50"])
    if spec.task == "pose":
        kpt = coco_ap(scenes, predictions, "keypoints")
        metrics.update(keypoint_AP=kpt["AP"], keypoint_AP50=kpt["AP50"])
    else:
        segm = coco_ap(scenes, predictions, "segm")
        metrics.update(mask_AP=segm["AP"], mask_AP50=segm["AP50"])
    metrics = {n: round(v, 4) for n, v in metrics.items()}
    metrics[f"people_found_at_conf_{CASE_CONF}"] = found_fraction(scenes, predictions, LABEL_PERSON)
    return metrics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(SPECS), required=True)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-scenes", type=int, default=120)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    spec = SPECS[args.task]

    wall_start = time.perf_counter()
    trained, run = train(spec, args)
    weights = args.out_dir / f"{spec.name}.pt"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(trained, weights)
    # Measured as committed: the fp16 weights widened back, as build_reference loads them.
    model = load_trained(spec, weights)
    eval_start = time.perf_counter()
    metrics = evaluate(model, spec, held_out_scenes(args.seed, args.eval_scenes, EVAL_SIZES))
    eval_seconds = time.perf_counter() - eval_start
    print("held-out: " + json.dumps(metrics), flush=True)

    record = {
        "command": command_line("tools/train_yolo.py", argv),
        "model": {"yaml": spec.yaml, "scale_depth_width_max_channels": list(spec.scale), "task": spec.task,
                  "classes": list(spec.class_names), "kpt_shape": list(spec.kpt_shape) if spec.kpt_shape else None},
        "seed": args.seed,
        "steps": args.steps,
        "batch": args.batch,
        "threads": args.threads,
        "optimiser": f"AdamW lr {args.lr} (warm-up {min(100, args.steps // 10)} steps, cosine to 2%), "
                     f"weight decay {args.weight_decay} on conv weights, grad-norm clip 10",
        "loss": "ultralytics.utils.loss." + ("v8PoseLoss" if spec.task == "pose" else "v8SegmentationLoss")
                + " with ultralytics.cfg defaults (box 7.5, cls 0.5, dfl 1.5, pose 12, kobj 1)",
        **training_description(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_bytes": weights.stat().st_size,
        "weights_dtype": "float16 state_dict",
        **run.summary(eval_seconds=eval_seconds, wall_start=wall_start),
        "held_out": {
            **held_out_description(args.eval_scenes, EVAL_SIZES),
            "predictions": f"eager model read by deploy_parity.adapters.UltralyticsYOLO at conf {EVAL_CONF} "
                           "(decode, class-aware NMS at IoU 0.7); masks upsampled bilinearly, > 0.5",
        },
        "metrics": metrics,
        "loss_history": run.history,
        **versions("ultralytics"),
    }
    write_record(weights, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
