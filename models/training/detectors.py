"""Training the zoo's torchvision detectors: their scenes, their optimiser and their record.

tools/train_rcnn.py (Keypoint R-CNN, Mask R-CNN) and tools/train_tv.py (FCOS) train a
torchvision detector the same way: AdamW, warm-up then cosine decay to zero, gradients
clipped, on every image size the parity suites feed, rectangular up to MAX_ASPECT, one
size per batch (no padding waste). Each image is rendered from its own key
(TRAIN_STREAM, seed, step, image), so a run never depends on the order it draws in; the
held-out scenes come from a stream (HELD_OUT_STREAM) that training never draws from.
What differs between the two tools (the targets, the initial weights, the metrics)
stays in them.
"""

from __future__ import annotations

import importlib
import math
from typing import Callable

import numpy as np
import torch

from deploy_parity.scenes.render import random_scene_spec, render_scene
from models.training.loop import TrainingRun, WarmupCosine, command_line, train_steps

# Held-out scenes are drawn from this stream only; training keys are (TRAIN_STREAM, seed, step, image).
HELD_OUT_STREAM = 7_777_001
TRAIN_STREAM = 1_000_003
MIN_SIDE, MAX_SIDE, MAX_ASPECT = 96, 224, 2.0  # the sizes the parity suites feed
# Share of training images with nothing in them: the models must learn to say "nothing
# here", the suites' zero-detection control.
EMPTY_SHARE = 0.08


def keyed_rng(*key: int) -> np.random.Generator:
    """numpy's generator for one key of integers."""
    return np.random.default_rng([int(k) for k in key])


def draw_size(rng: np.random.Generator) -> tuple:
    """(height, width) in the suites' size space, rectangular up to MAX_ASPECT."""
    height = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    w_lo = max(MIN_SIDE, math.ceil(height / MAX_ASPECT))
    w_hi = min(MAX_SIDE, math.floor(height * MAX_ASPECT))
    return height, int(rng.integers(w_lo, w_hi + 1))


def scene_for(rng: np.random.Generator, height: int, width: int, empty_share: float):
    """A scene with 1..3 people and 0..2 blocks or discs, or, at `empty_share`, an empty one."""
    empty = rng.random() < empty_share
    people, objects = (0, 0) if empty else (3, 2)
    spec = random_scene_spec(height, width, int(rng.integers(2**31 - 1)), min_people=min(1, people),
                             max_people=people, max_objects=objects)
    return render_scene(spec)


def training_scenes(seed: int, step: int, batch: int) -> list:
    """The `batch` scenes of training step `step`, all at one size."""
    height, width = draw_size(keyed_rng(TRAIN_STREAM, seed, step))
    return [scene_for(keyed_rng(TRAIN_STREAM, seed, step, i), height, width, EMPTY_SHARE) for i in range(batch)]


def held_out_scenes(count: int, stream: int = HELD_OUT_STREAM) -> list:
    """Scenes the models never trained on, with 1..3 people and 0..2 blocks/discs each."""
    scenes = []
    for i in range(count):
        rng = keyed_rng(stream, i)
        height, width = draw_size(rng)
        scenes.append(scene_for(rng, height, width, empty_share=0.0))
    return scenes


def image_tensor(scene) -> torch.Tensor:
    """The scene's image as torchvision's detectors take it: (3, H, W) float in [0, 1]."""
    return torch.from_numpy(scene.image).permute(2, 0, 1).float() / 255.0


def train_detector(detector: torch.nn.Module, target_for: Callable, *, steps: int, batch: int, lr: float,
                   warmup: int, seed: int, log_every: int = 50) -> TrainingRun:
    """Train a torchvision detector (its forward takes images and targets and returns its
    losses) on `steps` batches of training_scenes(); target_for(scene) is its target.
    torch is seeded with `seed` first: the detectors' samplers draw from it (the initial
    weights were seeded by the model's module)."""
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW([p for p in detector.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)

    def batch_loss(step: int):
        scenes = training_scenes(seed, step, batch)
        losses = detector([image_tensor(scene) for scene in scenes], [target_for(scene) for scene in scenes])
        return sum(losses.values()), {name: float(value.detach()) for name, value in losses.items()}

    # A few degenerate early batches (no positives) give large gradients (the R-CNNs' RPN): clipped.
    return train_steps(detector, optimizer, batch_loss, steps=steps, learning_rate=WarmupCosine(lr, steps, warmup),
                       log_every=log_every, clip_norm=10.0)


def training_record(model: str, tool: str, argv, args, run: TrainingRun, detector: torch.nn.Module, *,
                    wall_start: float, eval_seconds: float, metrics: dict, weights, **details) -> dict:
    """The record written next to the weights: the command and its settings, `details`
    (what only this tool says), times, losses, held-out metrics, size and versions."""
    return {
        "model": model,
        "command": command_line(tool, argv),
        "seed": args.seed,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        **details,
        **run.summary(eval_seconds=eval_seconds, wall_start=wall_start),
        "held_out": {"scenes": args.held_out, "stream": HELD_OUT_STREAM, "people": "1..3", "objects": "0..2",
                     "sizes": f"{MIN_SIDE}..{MAX_SIDE}, aspect <= {MAX_ASPECT}"},
        "metrics": metrics,
        "parameters": sum(p.numel() for p in detector.parameters()),
        "weights_bytes": weights.stat().st_size,
        "versions": {"torch": torch.__version__, "torchvision": importlib.import_module("torchvision").__version__},
    }
