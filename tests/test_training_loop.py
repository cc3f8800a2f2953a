"""models/training/: the schedule, the step loop, the replayed batches and the records
that every tools/train_*.py shares. The trainers themselves take minutes; these pin
down, in about a second, what they rely on."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from models.training.loop import WarmupCosine, command_line, derived_seed, save_weights, train_steps, write_record
from models.training.replayed_scenes import TRAIN_SIDES, ReplayedBatches


def rcnn_rate(step, steps=1200, peak=2e-3, warmup=100):
    """tools/train_rcnn.py's (and, with its defaults, tools/train_tv.py's) rate before WarmupCosine."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def detr_rate(step, steps=1600, peak=1e-3, warmup=50):
    """tools/train_detr_tiny.py's rate before WarmupCosine."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def lambda_lr_rate(step, steps, peak=2e-3, floor=0.0):
    """tools/train_pose_rtmo.py's (floor 0) and tools/train_yolo.py's (floor 0.02) rate
    before WarmupCosine: torch's LambdaLR, base rate times this share."""
    warmup = min(100, steps // 10)
    if step < warmup:
        share = (step + 1) / warmup
    else:
        share = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))
    return peak * share


# Each trainer's default schedule, and the rate its committed weights were trained with.
DEFAULT_SCHEDULES = {
    "train_rcnn.py": (WarmupCosine(2e-3, 1200, 100), rcnn_rate),
    "train_tv.py": (WarmupCosine(2e-3, 2000, 50), lambda step: rcnn_rate(step, steps=2000, warmup=50)),
    "train_detr_tiny.py": (WarmupCosine(1e-3, 1600, 50, floor=0.05), detr_rate),
    "train_pose_rtmo.py": (WarmupCosine(2e-3, 3600, 100, share_first=True), lambda step: lambda_lr_rate(step, 3600)),
    "train_yolo.py": (WarmupCosine(2e-3, 1000, 100, floor=0.02, share_first=True),
                      lambda step: lambda_lr_rate(step, 1000, floor=0.02)),
}


@pytest.mark.parametrize("tool", sorted(DEFAULT_SCHEDULES))
def test_schedule_is_bit_identical_to_the_committed_weights(tool):
    schedule, as_trained = DEFAULT_SCHEDULES[tool]
    assert [schedule(step) for step in range(schedule.steps)] == [as_trained(step) for step in range(schedule.steps)]


@pytest.mark.parametrize("share_first", [False, True])
def test_schedule_warms_up_then_decays_to_its_floor(share_first):
    schedule = WarmupCosine(1e-3, 50, 10, floor=0.1, share_first=share_first)
    rates = [schedule(s) for s in range(51)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3) and rates[10] == pytest.approx(1e-3)
    assert all(a <= b for a, b in zip(rates[:10], rates[1:10]))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[50] == pytest.approx(1e-4)  # one step after the last: floor * peak


def test_the_two_orders_differ_only_in_rounding():
    plain, lambda_lr = WarmupCosine(2e-3, 1000, 100), WarmupCosine(2e-3, 1000, 100, share_first=True)
    differ = [s for s in range(1000) if plain(s) != lambda_lr(s)]
    assert differ, "the orders round alike: share_first is no longer needed"
    assert all(plain(s) == pytest.approx(lambda_lr(s), rel=1e-15) for s in differ)


def least_squares(seed: int = 0):
    """A linear model and a batch_loss for y = 3x - 1 on fixed data."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(1, 1)
    x = torch.linspace(-1, 1, 16)[:, None]

    def batch_loss(step):
        error = model(x) - (3 * x - 1)
        mse = (error**2).mean()
        return mse, {"loss_mse": float(mse.detach()), "count": float(step)}

    return model, batch_loss


def test_train_steps_sets_the_rate_logs_and_averages(capsys):
    model, batch_loss = least_squares()
    optimiser = torch.optim.SGD(model.parameters(), lr=99.0)
    rates = []

    def learning_rate(step):
        rates.append(step)
        return 0.1 / (step + 1)

    run = train_steps(model, optimiser, batch_loss, steps=5, learning_rate=learning_rate, log_every=2,
                      average_weight=0.5)
    assert rates == [0, 1, 2, 3, 4] and optimiser.param_groups[0]["lr"] == 0.1 / 5
    assert not model.training
    # Running averages start at the first value, then move halfway to each new one.
    assert run.losses["count"] == 0.5 * (0.5 * (0.5 * (0.5 * 0 + 0.5 * 1) + 0.5 * 2) + 0.5 * 3) + 0.5 * 4
    assert [entry["step"] for entry in run.history] == [2, 4, 5]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("step 2/5 ") and " lr 5.00e-02 mse " in lines[0]
    assert run.final_losses == {name: round(value, 4) for name, value in run.losses.items()}


def test_train_steps_learns_and_clips():
    model, batch_loss = least_squares()
    before = float(batch_loss(0)[0].detach())
    train_steps(model, torch.optim.SGD(model.parameters(), lr=0.0), batch_loss, steps=60,
                learning_rate=lambda step: 0.3, log_every=100)
    assert float(batch_loss(60)[0].detach()) < before / 100

    # A clip norm far below the gradient's: the step is the clipped one.
    model, batch_loss = least_squares()
    start = [p.detach().clone() for p in model.parameters()]
    train_steps(model, torch.optim.SGD(model.parameters(), lr=0.0), batch_loss, steps=1,
                learning_rate=lambda step: 1.0, log_every=100, clip_norm=1e-3)
    moved = torch.cat([(p.detach() - s).flatten() for p, s in zip(model.parameters(), start)])
    assert float(moved.norm()) == pytest.approx(1e-3, rel=1e-3)


def test_replayed_batches_render_every_other_step_and_are_seeded():
    def draw(seed):
        prepared = []
        batches = ReplayedBatches(np.random.default_rng(seed), seed, 2,
                                  lambda scenes, h, w: prepared.append((h, w)) or (len(prepared), scenes))
        return [batches.next(step) for step in range(6)], prepared

    drawn, prepared = draw(5)
    assert len(prepared) == 3  # steps 0, 2, 4 render; 1, 3, 5 replay
    assert all(h in TRAIN_SIDES and w in TRAIN_SIDES for h, w in prepared)
    assert [batch[0] for batch in drawn[::2]] == [1, 2, 3]
    assert all(drawn[step] in drawn[:step] for step in (1, 3, 5))
    again, _ = draw(5)
    assert [b[0] for b in again] == [b[0] for b in drawn]
    assert all(np.array_equal(s.image, t.image) for a, b in zip(drawn, again) for s, t in zip(a[1], b[1]))


def test_derived_seed_depends_on_the_whole_key():
    assert derived_seed(1, 0, 2) == derived_seed(1, 0, 2)
    assert len({derived_seed(1, 0, 2), derived_seed(1, 0, 3), derived_seed(1, 1, 2), derived_seed(2, 0, 2)}) == 4


def test_weights_and_record_say_how_they_were_made(tmp_path, capsys):
    weights = save_weights({"w": torch.ones(2), "n": torch.tensor(3)}, tmp_path / "sub" / "m.pt", half=True)
    state = torch.load(weights, weights_only=True)
    assert state["w"].dtype == torch.float16 and state["n"].dtype == torch.int64
    command = command_line("tools/train_x.py", ["--out", "a b.pt"])
    assert command == ".venv/bin/python tools/train_x.py --out 'a b.pt'"
    path = write_record(weights, {"command": command, "wall_seconds": 1.5})
    assert path == tmp_path / "sub" / "m.json" and json.loads(path.read_text())["command"] == command
    assert capsys.readouterr().out.strip() == f"wrote {weights} ({weights.stat().st_size} bytes) and m.json; wall 1.5s"
