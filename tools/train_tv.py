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
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from models.training.coco_eval import coco_ap  # noqa: E402
from models.training.detectors import held_out_scenes, image_tensor, train_detector, training_record  # noqa: E402
from models.training.loop import save_weights, write_record  # noqa: E402

DEFAULTS = {"steps": 2000, "batch": 4, "lr": 2e-3, "warmup": 50, "seed": 0}
BACKBONE_FROM = REPO / "models" / "weights" / "mask_rcnn.pt"


def box_target(scene) -> dict:
    """torchvision's detection target for one scene: the boxes of every class."""
    return {"boxes": torch.from_numpy(scene.boxes).reshape(-1, 4).float(),
            "labels": torch.from_numpy(scene.labels).long()}


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
            result = detector(image_tensor(scene)[None])[0]
            out.append({k: result[k].numpy() for k in ("boxes", "scores", "labels")})
    return out


def evaluate(detector, scenes) -> dict:
    return {"bbox": coco_ap(scenes, predictions(detector.eval(), scenes), "bbox")}


def train(steps: int, batch: int, lr: float, warmup: int, seed: int, log_every: int = 50):
    """The trained detector (eval mode), the models.tv_fcos module, the TrainingRun and
    the number of backbone tensors copied from Mask R-CNN."""
    module = importlib.import_module("models.tv_fcos")
    detector = module.build_detector()
    copied = init_backbone(detector)
    run = train_detector(detector, box_target, steps=steps, batch=batch, lr=lr, warmup=warmup, seed=seed,
                         log_every=log_every)
    return module, detector, run, copied


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
    module, detector, run, copied = train(args.steps, args.batch, args.lr, args.warmup, args.seed)
    out = save_weights(detector.state_dict(), args.out or module.WEIGHTS, half=args.half)

    # Evaluate what the case loads: the stored weights, read back into the float32 model.
    reference = module.load_trained(module.build_detector(), out)
    eval_start = time.perf_counter()
    metrics = evaluate(reference, held_out_scenes(args.held_out))
    eval_seconds = time.perf_counter() - eval_start
    record = training_record(
        "tv-fcos", "tools/train_tv.py", argv, args, run, detector, wall_start=wall_start, eval_seconds=eval_seconds,
        metrics=metrics, weights=out,
        init=f"backbone from {BACKBONE_FROM.relative_to(REPO)} ({copied} tensors); head: FCOS's seeded init",
        storage="float16" if args.half else "float32",
    )
    print(json.dumps({"metrics": metrics, "wall_seconds": record["wall_seconds"]}, indent=1))
    write_record(out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
