"""A small one-stage multi-person pose model shaped like RTMO (bug class 1).

Heads at strides 8/16/32 predict, per feature-map cell ("prior"), a score, a box as
distances from the prior's centre, and 17 keypoints as offsets from it.

* Eager mode (the reference) builds priors from each head's actual feature-map
  shape (h, w): row-major, prior = (col*s + (s-1)/2, row*s + (s-1)/2).
* Deploy mode (what gets exported) precomputes `flatten_priors` / `flatten_stride`
  once from a configured `input_size`, ordered (width, height) as in MMDeploy.
  The correct grid is (input_size[1]//s, input_size[0]//s) = (H/s, W/s).
* The `-broken` variant builds it as (input_size[0]//s, input_size[1]//s) = (W/s, H/s):
  the same number of priors, so no shape error, and invisible on square inputs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deploy_parity.case import DeployTarget, InputSpec, ModelCase, OutputSpec, SizeSpace
from deploy_parity.compare.instances import Instances

STRIDES = (8, 16, 32)
NUM_KEYPOINTS = 17
TOPK = 20
WEIGHTS = Path(__file__).with_name("weights") / "pose_rtmo.pt"
SEED = 20261121


def conv_bn_act(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class TinyRTMOPose(nn.Module):
    """Eager reference: priors from the real feature-map shapes."""

    def __init__(self, width: int = 16, num_keypoints: int = NUM_KEYPOINTS, topk: int = TOPK):
        super().__init__()
        self.num_keypoints = num_keypoints
        self.topk = topk
        self.stem = nn.Sequential(conv_bn_act(3, width, 2), conv_bn_act(width, 2 * width, 2))
        self.stage8 = conv_bn_act(2 * width, 2 * width, 2)
        self.stage16 = conv_bn_act(2 * width, 4 * width, 2)
        self.stage32 = conv_bn_act(4 * width, 4 * width, 2)
        channels_per_prior = 1 + 4 + 3 * num_keypoints  # score, box ltrb, kpt (dx, dy, vis)
        self.heads = nn.ModuleList(nn.Conv2d(c, channels_per_prior, 1) for c in (2 * width, 4 * width, 4 * width))
        with torch.no_grad():
            # Untrained, the score logits bunch near 0 and the top-k cut is a near-tie;
            # spread them so selection is decisive (trained weights replace this).
            for head in self.heads:
                head.weight[0].mul_(8.0)

    @staticmethod
    def normalise(images: torch.Tensor) -> torch.Tensor:
        # uint8 images are 0..255, float images 0..1 (the case's declared convention).
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return (x - 0.45) / 0.25

    def head_maps(self, images: torch.Tensor):
        x = self.stem(self.normalise(images))
        c8 = self.stage8(x)
        c16 = self.stage16(c8)
        c32 = self.stage32(c16)
        return [head(f) for head, f in zip(self.heads, (c8, c16, c32))]

    @staticmethod
    def flatten_maps(maps) -> torch.Tensor:
        # (B, C, h, w) -> (B, h*w, C), row-major over (h, w), concatenated over strides.
        return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)

    def decode(self, flat: torch.Tensor, priors: torch.Tensor, strides: torch.Tensor, batch_gather_bug: bool = False):
        batch = flat.shape[0]
        k = self.num_keypoints
        score_logit = flat[..., 0]
        stride = strides.view(1, -1, 1)
        centre = priors.unsqueeze(0)  # (1, N, 2)
        ltrb = torch.exp(flat[..., 1:5].clamp(max=6.0)) * stride
        boxes = torch.cat([centre - ltrb[..., :2], centre + ltrb[..., 2:]], dim=-1)
        offsets = flat[..., 5 : 5 + 2 * k].reshape(batch, -1, k, 2)
        kpt_xy = centre.unsqueeze(2) + offsets * stride.unsqueeze(-1)
        kpt_score = torch.sigmoid(flat[..., 5 + 2 * k :])
        # Select on logits, not sigmoid scores (sigmoid saturates to exact ties at 1.0),
        # with a tiny per-prior ramp so exactly equal logits rank the same way everywhere.
        ramp = torch.arange(score_logit.shape[1], device=flat.device, dtype=flat.dtype) * 1e-6
        _, index = (score_logit - ramp).topk(self.topk, dim=1)
        if batch_gather_bug:
            # Bug class 3: a gather written for batch 1 reuses image 0's top-k priors.
            index = index[:1].expand(batch, -1)
        top_logit = score_logit.gather(1, index)
        # Gather per image: the batch index is kept by gathering along dim 1 only.
        boxes = boxes.gather(1, index.unsqueeze(-1).expand(-1, -1, 4))
        kpt_xy = kpt_xy.gather(1, index.view(batch, -1, 1, 1).expand(-1, -1, k, 2))
        kpt_score = kpt_score.gather(1, index.unsqueeze(-1).expand(-1, -1, k))
        dets = torch.cat([boxes, torch.sigmoid(top_logit).unsqueeze(-1)], dim=-1)
        keypoints = torch.cat([kpt_xy, kpt_score.unsqueeze(-1)], dim=-1)
        return dets, keypoints

    @staticmethod
    def priors_for_grid(rows: int, cols: int, stride: int) -> torch.Tensor:
        yy, xx = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        offset = (stride - 1) / 2.0
        return torch.stack([xx.reshape(-1) * stride + offset, yy.reshape(-1) * stride + offset], dim=-1).float()

    def forward(self, images: torch.Tensor):
        maps = self.head_maps(images)
        priors, strides = [], []
        for m, s in zip(maps, STRIDES):
            rows, cols = m.shape[-2:]  # the actual feature-map shape (h, w)
            priors.append(self.priors_for_grid(rows, cols, s))
            strides.append(torch.full((rows * cols,), float(s)))
        return self.decode(self.flatten_maps(maps), torch.cat(priors), torch.cat(strides))


class TinyRTMOPoseDeploy(nn.Module):
    """Deploy form: priors frozen for `input_size` = (width, height), as MMDeploy does."""

    def __init__(self, model: TinyRTMOPose, input_size, transposed_prior_bug: bool = False,
                 batch_gather_bug: bool = False):
        super().__init__()
        self.model = model
        self.batch_gather_bug = batch_gather_bug
        self.input_size = tuple(input_size)  # (width, height)
        priors, strides = [], []
        for s in STRIDES:
            if transposed_prior_bug:
                rows, cols = input_size[0] // s, input_size[1] // s  # (W/s, H/s): the bug
            else:
                rows, cols = input_size[1] // s, input_size[0] // s  # (H/s, W/s): the fix
            priors.append(TinyRTMOPose.priors_for_grid(rows, cols, s))
            strides.append(torch.full((rows * cols,), float(s)))
        self.register_buffer("flatten_priors", torch.cat(priors), persistent=False)
        self.register_buffer("flatten_stride", torch.cat(strides), persistent=False)

    def forward(self, images: torch.Tensor):
        flat = TinyRTMOPose.flatten_maps(self.model.head_maps(images))
        return self.model.decode(flat, self.flatten_priors, self.flatten_stride, self.batch_gather_bug)


def build_reference() -> TinyRTMOPose:
    torch.manual_seed(SEED)
    model = TinyRTMOPose()
    if WEIGHTS.is_file():
        model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()


def deploy_builder(transposed_prior_bug: bool = False, batch_gather_bug: bool = False):
    def build_deploy(target: DeployTarget) -> TinyRTMOPoseDeploy:
        input_size = (target.width, target.height)  # MMDeploy's (width, height) order
        return TinyRTMOPoseDeploy(build_reference(), input_size, transposed_prior_bug, batch_gather_bug).eval()

    return build_deploy


def to_instances(outputs: dict, index: int, image_size) -> Instances:
    dets = outputs["dets"][index]
    return Instances(boxes=dets[:, :4], scores=dets[:, 4], keypoints=outputs["keypoints"][index], image_size=image_size)


CASE = ModelCase(
    name="pose-rtmo",
    description="one-stage multi-person pose model, priors at strides 8/16/32 (bug class 1)",
    build_reference=build_reference,
    build_deploy=deploy_builder(transposed_prior_bug=False),
    inputs=(InputSpec("images", "image", ("float32", "uint8")),),
    outputs=(
        OutputSpec("dets", "boxes", "(B, K, 5) x1 y1 x2 y2 score"),
        OutputSpec("keypoints", "keypoints", "(B, K, 17, 3) x y score"),
    ),
    # Deploy priors are computed with integer division by 32: only multiples of 32 work.
    sizes=SizeSpace(min_side=64, max_side=320, multiple_of=32, max_aspect=4.0, export_height=192, export_width=192),
    to_instances=to_instances,
    max_batch=4,
    spatial_binding="per-size",
    topk=TOPK,
    bug_class=1,
)

BROKEN = replace(
    CASE,
    name="pose-rtmo-broken",
    description="pose-rtmo with the transposed deploy prior grid (W/s, H/s)",
    build_deploy=deploy_builder(transposed_prior_bug=True),
    default=False,
    broken_variant_of="pose-rtmo",
)

BATCH_BROKEN = replace(
    CASE,
    name="pose-rtmo-batch-broken",
    description="pose-rtmo whose deploy gather forgets the batch index (bug class 3)",
    build_deploy=deploy_builder(batch_gather_bug=True),
    default=False,
    bug_class=3,
    broken_variant_of="pose-rtmo",
)

CASES = [CASE, BROKEN, BATCH_BROKEN]
