"""The training loop that every tools/train_*.py runs, and what goes with it.

The zoo's small models train on CPU, on rendered scenes, for a fixed number of steps,
and the same command must give the same weights. What the trainers share lives here:
the learning-rate schedule (linear warm-up, then cosine decay), the optimiser step loop
(optional gradient clipping, running loss averages, a progress line every so often),
the seed each rendered image is drawn from, and how the weights and the record of the
command that made them are written. What a trainer learns (its model, loss, data and
metrics) stays in the tool.
"""

from __future__ import annotations

import importlib
import json
import math
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

# How a record writes the interpreter: the trainers' docstrings run them this way, from
# the repository root, so the recorded command can be pasted back.
PYTHON = ".venv/bin/python"


@dataclass(frozen=True)
class WarmupCosine:
    """The learning rate per step: linear warm-up to `peak` over the first `warmup`
    steps, then cosine decay that would reach `floor * peak` one step after the last."""

    peak: float
    steps: int
    warmup: int
    floor: float = 0.0  # the share of the peak the decay ends at
    # Two ways of writing the same rate, kept because they round differently in the last
    # bit at about a quarter of the steps, and each tool's committed weights were trained
    # with its own. torch's LambdaLR (tools/train_pose_rtmo.py, tools/train_yolo.py)
    # multiplies the peak by a share computed first: peak * ((step + 1) / warmup), and
    # cos(pi * (step - warmup) / decay_steps). The others multiply the peak in first:
    # peak * (step + 1) / warmup, and cos(pi * ((step - warmup) / decay_steps)).
    share_first: bool = False

    def __call__(self, step: int) -> float:
        """The learning rate of `step` (0-based)."""
        decay_steps = max(1, self.steps - self.warmup)
        if self.share_first:
            if step < self.warmup:
                return self.peak * ((step + 1) / self.warmup)
            return self.peak * self._cosine_share(math.pi * (step - self.warmup) / decay_steps)
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        return self.peak * self._cosine_share(math.pi * ((step - self.warmup) / decay_steps))

    def _cosine_share(self, angle: float) -> float:
        """The share of the peak at `angle` (0 to pi) through the decay."""
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(angle))


@dataclass(frozen=True)
class TrainingRun:
    """What train_steps() did: how long it took and what the losses were."""

    seconds: float  # the step loop's wall time
    losses: dict  # each loss's running average after the last step
    history: list  # per progress line: step, seconds and the running averages (4 decimals)

    @property
    def final_losses(self) -> dict:
        """The running averages after the last step, to 4 decimals, as records keep them."""
        return {name: round(value, 4) for name, value in self.losses.items()}

    def summary(self, *, eval_seconds: float, wall_start: float) -> dict:
        """The record's times (training, evaluation, the whole run since `wall_start`, a
        time.perf_counter() reading) and final losses."""
        return {
            "train_seconds": round(self.seconds, 1),
            "eval_seconds": round(eval_seconds, 1),
            "wall_seconds": round(time.perf_counter() - wall_start, 1),
            "final_losses": self.final_losses,
        }


def train_steps(model: torch.nn.Module, optimiser: torch.optim.Optimizer,
                batch_loss: Callable[[int], tuple], *, steps: int, learning_rate: Callable[[int], float],
                log_every: int, clip_norm: Optional[float] = None, average_weight: float = 0.05) -> TrainingRun:
    """Train `model` for `steps` optimiser steps and leave it in eval mode.

    batch_loss(step) draws the batch of `step` and returns (the loss to minimise, its
    named parts as floats); learning_rate(step) sets every parameter group's rate
    before it. Gradients are clipped to `clip_norm` (total norm) when one is given.
    Each part's running average starts at its first value and then moves by
    `average_weight` towards each new one; a progress line with the running averages
    and the step's rate is printed every `log_every` steps and after the last.
    """
    model.train()
    start = time.perf_counter()
    running: dict = {}
    history = []
    for step in range(steps):
        rate = learning_rate(step)
        for group in optimiser.param_groups:
            group["lr"] = rate
        loss, parts = batch_loss(step)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimiser.step()
        for name, value in parts.items():
            # Parts may first appear after step 0 (a loss that needs a positive sample).
            running[name] = value if name not in running else \
                (1 - average_weight) * running[name] + average_weight * value
        if (step + 1) % log_every == 0 or step + 1 == steps:
            elapsed = time.perf_counter() - start
            # torchvision prefixes every loss name with "loss_", which says nothing here.
            line = " ".join(f"{name.removeprefix('loss_')} {value:.3f}" for name, value in running.items())
            print(f"step {step + 1}/{steps} {elapsed:.0f}s lr {rate:.2e} {line}", flush=True)
            history.append({"step": step + 1, "seconds": round(elapsed, 1),
                            **{name: round(value, 4) for name, value in running.items()}})
    model.eval()
    return TrainingRun(time.perf_counter() - start, running, history)


def derived_seed(*key: int) -> int:
    """One 32-bit seed from a key of integers (numpy's SeedSequence). Every rendered
    image has its own key, so what a run draws never depends on the order it draws in."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


def command_line(tool: str, argv: Optional[list]) -> str:
    """The command that ran `tool` (its path from the repository root) with `argv`
    (None: this process's arguments), as the tool's record states it."""
    return shlex.join([PYTHON, tool, *(sys.argv[1:] if argv is None else argv)])


def versions(*packages: str) -> dict:
    """The versions a record names: torch's, those of `packages` (importable names), Python's."""
    return {"torch": torch.__version__, **{name: importlib.import_module(name).__version__ for name in packages},
            "python": platform.python_version()}


def save_weights(state_dict: dict, path: Path, half: bool = False) -> Path:
    """Write a state dict to `path` (float16 storage for floating tensors with `half`)."""
    if half:
        state_dict = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, path)
    return path


def write_record(weights: Path, record: dict) -> Path:
    """Write the record of the run that made `weights` next to them (same name, .json),
    and say what was written (and the run's wall time, where the record has one)."""
    path = weights.with_suffix(".json")
    path.write_text(json.dumps(record, indent=1) + "\n")
    wall = f"; wall {record['wall_seconds']}s" if "wall_seconds" in record else ""
    print(f"wrote {weights} ({weights.stat().st_size} bytes) and {path.name}{wall}", flush=True)
    return path
