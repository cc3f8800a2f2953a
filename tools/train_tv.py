"""Train the zoo's torchvision FCOS (models/tv_fcos.py) on synthetic scenes, on one CPU thread.

    .venv/bin/python tools/train_tv.py
    .venv/bin/python tools/train_tv.py --steps 2000 --seed 0 --half

Writes models/weights/tv_fcos.pt (the FCOS state dict; float16 storage with
--half, loaded back into the float32 model) and models/weights/tv_fcos.json: the
command, seed, steps, wall time and the held-out COCO box AP (pycocotools).

The backbone starts from the zoo's trained Mask R-CNN backbone (models/weights/
mask_rcnn.pt: the same tiny_backbone, trained on the same scenes and classes), so a few
hundred steps train the FCOS head; the rest of the model starts from FCOS's own seeded
initialisation. Training goes through torchvision's own transform (it resizes the
images as it does at inference), on every size the suites feed, not only tv-fcos's
multiples of 8. Deterministic as tools/train_rcnn.py is: images rendered from seeds
derived from (seed, step, image), one thread.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from models.training.coco_eval import coco_ap  # noqa: E402
from tools.train_rcnn import (  # noqa: E402
    EMPTY_SHARE,
    HELD_OUT_STREAM,
    MAX_ASPECT,
    MAX_SIDE,
    MIN_SIDE,
    TRAIN_STREAM,
    _rng,
    draw_size,
    held_out_scenes,
    learning_rate,
    scene_for,
)

DEFAULTS = {"steps": 2000, "batch": 4, "lr": 2e-3, "warmup": 50, "seed": 0}
BACKBONE_FROM = REPO / "models" / "weights" / "mask_rcnn.pt"


def training_batch(seed: int, step: int, batch: int):
    """One batch at one size: images (float [0, 1]) and box targets of every class."""
    height, width = draw_size(_rng(TRAIN_STREAM, seed, step))
    images, targets = [], []
    for i in range(batch):
        scene = scene_for(_rng(TRAIN_STREAM, seed, step, i), height, width, EMPTY_SHARE)
        images.append(torch.from_numpy(scene.image).permute(2, 0, 1).float() / 255.0)
        targets.append({"boxes": torch.from_numpy(scene.boxes).reshape(-1, 4).float(),
                        "labels": torch.from_numpy(scene.labels).long()})
    return images, targets


def init_backbone(detector) -> int:
    """Copy the trained Mask R-CNN backbone into the detector; the number of tensors copied."""
    state = torch.load(BACKBONE_FROM, map_location="cpu", weights_only=True)
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    detector.backbone.load_state_dict(backbone)
    return len(backbone)


def predictions(detector, scenes) -> list:
    out = []
    with torch.inference_mode():
        for scene in scenes:
            image = torch.from_numpy(scene.image).permute(2, 0, 1)[None].float() / 255.0
            result = detector(image)[0]
            out.append({k: result[k].numpy() for k in ("boxes", "scores", "labels")})
    return out


def evaluate(detector, scenes) -> dict:
    return {"bbox": coco_ap(scenes, predictions(detector.eval(), scenes), "bbox")}


def train(steps: int, batch: int, lr: float, warmup: int, seed: int, log_every: int = 50):
    module = importlib.import_module("models.tv_fcos")
    detector = module.build_detector()
    copied = init_backbone(detector)
    torch.manual_seed(seed)
    detector.train()
    params = [p for p in detector.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    start = time.perf_counter()
    running = None
    for step in range(steps):
        images, targets = training_batch(seed, step, batch)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr, warmup)
        losses = detector(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        values = {k: float(v.detach()) for k, v in losses.items()}
        running = values if running is None else {k: 0.95 * running[k] + 0.05 * v for k, v in values.items()}
        if (step + 1) % log_every == 0 or step == steps - 1:
            parts = " ".join(f"{k} {v:.3f}" for k, v in running.items())
            print(f"step {step + 1}/{steps} {time.perf_counter() - start:.0f}s "
                  f"lr {optimizer.param_groups[0]['lr']:.2e} {parts}", flush=True)
    return module, detector.eval(), time.perf_counter() - start, running, copied


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--warmup", type=int, default=DEFAULTS["warmup"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--half", action="store_true", help="store the weights as float16")
    parser.add_argument("--held-out", type=int, default=48, help="held-out scenes for the COCO metrics")
    parser.add_argument("--out", type=Path, default=None, help="weights path (default: models/weights/tv_fcos.pt)")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # deterministic, and fair to the other jobs on a shared CPU
    wall_start = time.perf_counter()
    module, detector, train_seconds, final_losses, copied = train(args.steps, args.batch, args.lr, args.warmup,
                                                                  args.seed)
    out = args.out or module.WEIGHTS
    out.parent.mkdir(parents=True, exist_ok=True)
    state = detector.state_dict()
    if args.half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, out)

    # Evaluate what the case loads: the stored weights, read back into the float32 model.
    reference = module.load_trained(module.build_detector(), out)
    eval_start = time.perf_counter()
    metrics = evaluate(reference, held_out_scenes(args.held_out))
    eval_seconds = time.perf_counter() - eval_start
    record = {
        "model": "tv-fcos",
        "command": shlex.join([".venv/bin/python", "tools/train_tv.py", *(argv or sys.argv[1:])]),
        "seed": args.seed,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "warmup": args.warmup,
        "threads": 1,
        "init": f"backbone from {BACKBONE_FROM.relative_to(REPO)} ({copied} tensors); head: FCOS's seeded init",
        "storage": "float16" if args.half else "float32",
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
